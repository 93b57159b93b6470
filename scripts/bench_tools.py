#!/usr/bin/env python3
"""Tool-call overhead: the daemon's time between a model's tool call and the tool's start.

It runs ``aiosvc serve`` with an ``openai`` agent on a fake OpenAI-compatible upstream (the
tests' one, in this process) and one stdio MCP server (the tests' one), its ``stamp`` tool
auto-approved, so that no approval wait is counted. Each reply is one round in which the
model calls ``stamp`` once, then a round that answers. The overhead of a call is the tool's
start (``time.time()`` in the MCP server, its output) minus the moment the upstream wrote
``[DONE]`` after the call (the agent acts once the round's stream is whole); both clocks are
the same machine's. It covers reading the end of the stream, assembling the call, ``tool.use``,
the approval policy, the MCP client's request over the server's stdin and the server's
dispatch to the tool. Prints the median, p90 and max over the calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import benchlib  # noqa: E402

from tests.fake_openai import FakeOpenAI  # noqa: E402

PROMPT = json.dumps({"calls": [{"name": "t__stamp", "arguments": "{}"}]})


async def main(calls: int, warmup: int) -> None:
    """Run the benchmark and print its figures."""
    fake = FakeOpenAI()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    upstream_port = benchlib.free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "aiosvc.toml"
        config.write_text(
            f'[mcp.t]\ncommand = ["{sys.executable}", "{ROOT / "tests" / "mcp_server.py"}"]\n\n'
            '[agents.bench]\nkind = "openai"\nmodel = "tools"\n'
            f'base_url = "http://127.0.0.1:{upstream_port}/v1"\n'
            'tools = ["t.stamp"]\nauto_approve = ["t"]\n'
        )
        port = benchlib.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOSVC_")}
        daemon = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "aiosvc", "serve", "--port", str(port)),
            *("--config", str(config), "--db", str(Path(tmp) / "bench.db")),
            env=env | {"AIOSVC_LOG_LEVEL": "warning"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                await connected(http, base)
                overheads = []
                for index in range(warmup + calls):
                    # a session per call: its history stays one page long
                    async with http.post(base + "/api/v1/sessions", json={"agent": "bench"}) as r:
                        session_id = (await r.json())["data"]["id"]
                    url = f"{base}/api/v1/sessions/{session_id}/messages?wait=true"
                    async with http.post(url, json={"content": PROMPT}) as r:
                        assert r.status == 200, await r.text()
                    started = await last_tool_output(http, base, session_id)
                    record = fake.of_model("tools")[-2]  # the round with the call
                    assert record.done_at is not None
                    if index >= warmup:
                        overheads.append((started - record.done_at) * 1000)
        finally:
            daemon.terminate()
            await asyncio.wait_for(daemon.wait(), 30)
            await runner.cleanup()
    overheads.sort()
    print(f"tool calls: {len(overheads)} (after {warmup} warm-up calls), one per reply")
    print(
        "daemon overhead per tool call (upstream's [DONE] to the tool's start): "
        f"median {statistics.median(overheads):.2f} ms, "
        f"p90 {overheads[int(len(overheads) * 0.9)]:.2f} ms, max {overheads[-1]:.2f} ms"
    )


async def connected(http: aiohttp.ClientSession, base: str) -> None:
    """Wait until the daemon answers and its MCP server is connected."""
    async with asyncio.timeout(60):
        while True:
            try:
                async with http.get(base + "/api/v1/mcp") as r:
                    if r.status == 200 and (await r.json())["data"][0]["status"] == "connected":
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def last_tool_output(http: aiohttp.ClientSession, base: str, session_id: str) -> float:
    """The output of the session's newest tool message: the tool's start time."""
    url = f"{base}/api/v1/sessions/{session_id}/messages?limit=500"
    async with http.get(url) as r:
        messages = (await r.json())["data"]
    return float([m for m in messages if m["role"] == "tool"][-1]["content"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    options = parser.parse_args()
    started = time.monotonic()
    asyncio.run(main(options.calls, options.warmup))
    print(f"took {time.monotonic() - started:.1f} s")

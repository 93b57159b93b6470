#!/usr/bin/env python3
"""Approvals benchmark: what an approval costs besides the person's thinking time.

It starts ``aiosvc serve`` (its default echo agent) and prints the median and 95th percentile
of, each over ``--rounds`` sequential rounds:

- an external approval's round trip: ``POST /api/v1/approvals?wait=true`` sent, its
  ``approval.requested`` seen by a WebSocket client that answers it with the ``approve`` op at
  once, the ``200`` back at the poster;
- a tool call of a remembered tool (``/tool NAME {}`` to the echo agent, answered without
  asking) against a plain message, both with ``?wait=true``: the difference is the daemon's
  cost of looking the decision up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib


def summary(name: str, seconds: list[float]) -> str:
    """``name: median ms, p95 ms``."""
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"{name:<40} median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms"


async def external_round_trips(http: aiohttp.ClientSession, base: str, rounds: int) -> list[float]:
    """Post, approve from a WebSocket client as soon as it is announced, get the answer."""
    times = []
    async with http.ws_connect(base + "/api/v1/ws") as ws:
        await ws.receive_json()  # hello
        await ws.send_json({"op": "subscribe", "topics": ["approvals"]})
        await ws.receive_json()  # ack

        async def approver() -> None:
            async for message in ws:
                frame = message.json()
                event = frame.get("event") or {}
                if event.get("type") == "approval.requested":
                    approval_id = event["data"]["id"]
                    await ws.send_json(
                        {"op": "approve", "approval_id": approval_id, "decision": "approve"}
                    )

        task = asyncio.ensure_future(approver())
        try:
            for _ in range(rounds):
                started = time.perf_counter()
                async with http.post(
                    base + "/api/v1/approvals?wait=true", json={"tool": "bench", "input": {}}
                ) as response:
                    body: Any = await response.json()
                times.append(time.perf_counter() - started)
                assert body["data"]["status"] == "approved", body
                await asyncio.sleep(0.025)  # within the WebSocket's op rate (50/s)
        finally:
            task.cancel()
    return times


async def replies(
    http: aiohttp.ClientSession, base: str, session_id: str, content: str, rounds: int
) -> list[float]:
    """Send ``content`` ``rounds`` times with ``?wait=true``; the time of each."""
    url = f"{base}/api/v1/sessions/{session_id}/messages?wait=true"
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        async with http.post(url, json={"content": content}) as response:
            body: Any = await response.json()
        times.append(time.perf_counter() - started)
        assert body["data"]["status"] == "complete", body
    return times


async def remembered(http: aiohttp.ClientSession, base: str, rounds: int) -> dict[str, list[float]]:
    """A remembered tool's call against a plain message, alternating."""
    async with http.post(base + "/api/v1/sessions", json={}) as response:
        session_id = (await response.json())["data"]["id"]
    url = f"{base}/api/v1/sessions/{session_id}/messages"
    async with http.post(url, json={"content": "/tool bench {}"}):
        pass
    while True:
        async with http.get(f"{base}/api/v1/approvals?status=pending") as response:
            pending = (await response.json())["data"]
        if pending:
            break
        await asyncio.sleep(0.01)
    decision = {"decision": "approve", "remember": "session"}
    async with http.post(f"{base}/api/v1/approvals/{pending[0]['id']}", json=decision):
        pass
    await replies(http, base, session_id, "warm up", 20)
    plain: list[float] = []
    tool: list[float] = []
    for _ in range(rounds // 10):
        plain += await replies(http, base, session_id, "hello there", 10)
        tool += await replies(http, base, session_id, "/tool bench {}", 10)
    return {"plain message": plain, "remembered tool call": tool}


async def main(rounds: int) -> None:
    """Start a daemon, measure, stop it."""
    with benchlib.workdir() as folder:
        port = benchlib.free_port()
        process = benchlib.start_aiosvc(Path(folder), port)
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                await external_round_trips(http, base, 20)  # warm up
                print(
                    summary(
                        "external approval, wait=true",
                        await external_round_trips(http, base, rounds),
                    )
                )
                for name, times in (await remembered(http, base, rounds)).items():
                    print(summary(name + ", wait=true", times))
        except BaseException:
            print((Path(folder) / f"aiosvc-{port}.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            benchlib.stop(process)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    asyncio.run(main(parser.parse_args().rounds))

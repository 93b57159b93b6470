"""What the end-to-end tests of tools share: a config with the test MCP server and agents on
the fake upstream, a real ``aiosvc serve``, a session's events over WebSocket, and the
process tree (read from /proc) to prove that nothing outlives what should end."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
from pytest_aiohttp import AiohttpServer

from tests import installed
from tests.fake_openai import FakeOpenAI
from tests.process_api import Api
from tests.serving import Server

MCP_SERVER = Path(__file__).resolve().parent / "mcp_server.py"
#: The tools of tests/mcp_server.py, by full name on the server ``t``.
TOOLS = ("add", "echo", "fail", "hang", "spawn", "big", "environment", "stamp", "pid")


def config_text(base_url: str, *, approval_timeout_s: float = 60.0, extra: str = "") -> str:
    """Agents on the fake upstream with the test MCP server ``t`` (and a broken one)."""
    python = installed.install_dir() / "bin" / "python"
    agent = f'kind = "openai"\nbase_url = "{base_url}"\ntimeout_s = 30\n'
    return (
        "[server]\nshutdown_timeout_s = 2\n\n"
        f"[approvals]\ntimeout_s = {approval_timeout_s}\n\n"
        f'[mcp.t]\ncommand = ["{python}", "{MCP_SERVER}"]\nenv = {{ MARK = "m" }}\n\n'
        '[mcp.broken]\ncommand = ["/nonexistent/mcp-server"]\n\n'
        f'[agents.ask]\n{agent}model = "tools"\ntools = ["t"]\ntool_timeout_s = 3\n\n'
        f'[agents.auto]\n{agent}model = "tools"\ntools = ["t"]\nauto_approve = ["t"]\n'
        "tool_timeout_s = 3\n\n"
        f'[agents.loop]\n{agent}model = "tools-loop"\ntools = ["t.add"]\n'
        'auto_approve = ["t.add"]\nmax_tool_rounds = 2\n\n'
        f'[agents.slow]\n{agent}model = "slow"\ntools = ["t"]\n\n' + extra
    )


@attrs.define
class Rig:
    """A running daemon with its API, and the fake upstream it talks to."""

    server: Server
    api: Api
    fake: FakeOpenAI
    http: aiohttp.ClientSession


async def serve_fake(aiohttp_server: AiohttpServer) -> tuple[FakeOpenAI, str]:
    """The fake upstream on loopback, and its base URL (for each test module's fixture)."""
    fake = FakeOpenAI()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("/v1"))


async def start_rig(tmp_path: Path, upstream: tuple[FakeOpenAI, str], **options: Any) -> Rig:
    """Write the config, start the daemon, wait for ``t`` to connect."""
    fake, base_url = upstream
    config = tmp_path / "aiosvc.toml"
    config.write_text(config_text(base_url, **options))
    server = Server(tmp_path / "aiosvc.db", config=config)
    await server.start()
    http = aiohttp.ClientSession()
    rig = Rig(server, Api(http, server), fake, http)
    await mcp_status(rig, "t", "connected")
    return rig


async def stop_rig(rig: Rig) -> None:
    """Stop the daemon (SIGTERM: exit 0) and close the client."""
    await rig.http.close()
    assert await rig.server.stop() == 0


async def mcp_status(rig: Rig, name: str, status: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until server ``name`` has ``status``; return its entry."""
    async with asyncio.timeout(timeout):
        while True:
            got, body = await rig.api.call("GET", "/api/v1/mcp")
            assert got == 200, body
            entry: dict[str, Any] = next(s for s in body["data"] if s["name"] == name)
            if entry["status"] == status:
                return entry
            await asyncio.sleep(0.05)


def calls(*items: tuple[str, str], interleave: bool = False) -> str:
    """A prompt for the fake's ``tools`` model: these (function name, arguments) calls."""
    spec = {"calls": [{"name": n, "arguments": a} for n, a in items], "interleave": interleave}
    return json.dumps(spec)


async def session_events(
    rig: Rig, session_id: str, reply_id: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The session's events over WebSocket (from the start), until a reply's final event
    (``message.completed``, ``.failed`` or ``.cancelled``): ``reply_id``'s, or the first."""
    url = f"{rig.server.url}/api/v1/ws"
    async with rig.http.ws_connect(url) as ws:
        await ws.send_json({"op": "subscribe", "topics": [f"session:{session_id}"], "since": 0})
        async with asyncio.timeout(60):
            async for frame in ws:
                data = json.loads(frame.data)
                if data.get("type") != "event":
                    continue
                event: dict[str, Any] = data["event"]
                yield event
                if event["type"] in FINAL and reply_id in (None, event["data"]["id"]):
                    return


FINAL = frozenset({"message.completed", "message.failed", "message.cancelled"})


# ---- the process tree, from /proc


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    found, frontier = [], [pid]
    while frontier:
        for child in children(frontier.pop()):
            found.append(child)
            frontier.append(child)
    return found


def alive(pid: int) -> bool:
    """Tell whether ``pid`` runs (a zombie does not count)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def command_line(pid: int) -> str:
    """A process's command line, spaces between its arguments."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def gone(pids: list[int], timeout: float = 10) -> None:
    """Wait until none of ``pids`` runs."""
    async with asyncio.timeout(timeout):
        while any(alive(p) for p in pids):
            await asyncio.sleep(0.05)

"""MCP servers under a real ``aiosvc serve``: listed with their state and tools, stopped and
started by route, restarted with backoff when they die, given only their own environment,
and never outliving the daemon (nor their tools' children outliving them)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from tests import installed
from tests.fake_openai import FakeOpenAI
from tests.serving import free_port
from tests.tools_harness import (
    MCP_SERVER,
    TOOLS,
    alive,
    calls,
    command_line,
    descendants,
    gone,
    mcp_status,
    serve_fake,
    session_events,
    start_rig,
    stop_rig,
)

Upstream = tuple[FakeOpenAI, str]


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> Upstream:
    return await serve_fake(aiohttp_server)


def server_pid(daemon: int) -> int:
    """The pid of the test MCP server below the daemon."""
    [pid] = [p for p in descendants(daemon) if "mcp_server.py" in command_line(p)]
    return pid


async def test_servers_and_tools_are_listed_and_stopped_and_started(
    tmp_path: Path, upstream: Upstream
) -> None:
    rig = await start_rig(tmp_path, upstream)
    api = rig.api
    assert rig.server.process is not None
    daemon = rig.server.process.pid
    try:
        broken = await mcp_status(rig, "broken", "failed")
        assert broken["transport"] == "stdio"
        assert broken["tools"] == []
        assert "cannot start '/nonexistent/mcp-server'" in broken["error"]
        status, body = await api.call("GET", "/api/v1/mcp")
        assert status == 200
        assert (body["total"], body["limit"], body["offset"]) == (2, 50, 0)
        assert [s["name"] for s in body["data"]] == ["broken", "t"]
        assert body["data"][1] == {
            "name": "t",
            "transport": "stdio",
            "status": "connected",
            "error": None,
            "tools": [f"t.{name}" for name in TOOLS],
        }
        status, body = await api.call("GET", "/api/v1/tools")
        assert status == 200
        assert [t["name"] for t in body["data"]] == [f"t.{name}" for name in TOOLS]
        assert body["data"][0] == {
            "name": "t.add",
            "server": "t",
            "description": "Add two integers.",
            "input_schema": body["data"][0]["input_schema"],
        }
        schema = body["data"][0]["input_schema"]
        assert (schema["type"], sorted(schema["properties"]), sorted(schema["required"])) == (
            "object",
            ["a", "b"],
            ["a", "b"],
        )
        status, body = await api.call("GET", "/api/v1/tools?limit=2&offset=1")
        assert [t["name"] for t in body["data"]] == ["t.echo", "t.fail"]

        # unknown servers
        for method, path in (("POST", "/api/v1/mcp/nope/stop"), ("POST", "/api/v1/mcp/nope/start")):
            status, body = await api.call(method, path)
            assert status == 404, body
            assert body["error"]["code"] == "not_found"

        # stop: the server and the child a tool left running both end; start: it comes back
        session_id = await api.session_for("auto")
        await api.send(session_id, calls(("t__spawn", "{}")))
        await api.replies(session_id, "complete")
        [tool_message] = [m for m in await api.messages(session_id) if m["role"] == "tool"]
        child = int(tool_message["content"])
        first = server_pid(daemon)
        assert alive(child)
        status, body = await api.call("POST", "/api/v1/mcp/t/stop")
        assert status == 200, body
        assert body["data"] == {
            "name": "t",
            "transport": "stdio",
            "status": "stopped",
            "error": None,
            "tools": [],
        }
        await gone([first, child], timeout=5)
        status, body = await api.call("GET", "/api/v1/tools")
        assert body["data"] == []
        status, body = await api.call("POST", "/api/v1/mcp/t/start")
        assert status == 200, body
        assert body["data"]["status"] == "connecting"
        await mcp_status(rig, "t", "connected")
        assert server_pid(daemon) != first
    finally:
        await stop_rig(rig)


async def test_a_server_that_dies_is_restarted_and_none_outlives_the_daemon(
    tmp_path: Path, upstream: Upstream
) -> None:
    rig = await start_rig(tmp_path, upstream)
    assert rig.server.process is not None
    daemon = rig.server.process.pid
    seen: list[int] = []
    try:
        first = server_pid(daemon)
        seen.append(first)
        os.kill(first, signal.SIGKILL)
        statuses: list[str] = []
        async with asyncio.timeout(30):
            while statuses[-1:] != ["connected"] or len(statuses) < 2:
                _, body = await rig.api.call("GET", "/api/v1/mcp")
                entry = next(s for s in body["data"] if s["name"] == "t")
                if not statuses or statuses[-1] != entry["status"]:
                    statuses.append(entry["status"])
                    if entry["status"] == "failed":
                        assert entry["error"] == "the server closed the connection"
                        assert entry["tools"] == []
                await asyncio.sleep(0.02)
        # (it may be seen connected once more before the death is noticed)
        assert statuses[statuses.index("failed") :] == ["failed", "connecting", "connected"]
        second = server_pid(daemon)
        assert second != first
        seen += [second, *descendants(daemon)]

        # the environment is only what the config gives, with PATH, HOME and LANG
        session_id = await rig.api.session_for("auto")
        await rig.api.send(session_id, calls(("t__environment", "{}")))
        await rig.api.replies(session_id, "complete")
        [tool_message] = [m for m in await rig.api.messages(session_id) if m["role"] == "tool"]
        environment: dict[str, Any] = json.loads(tool_message["content"])
        assert environment["MARK"] == "m"
        assert set(environment) <= {"MARK", "PATH", "HOME", "LANG"}
        assert "PATH" in environment
    finally:
        await stop_rig(rig)
    await gone(seen, timeout=5)


async def test_a_reply_sees_a_server_stopped_under_it_as_the_calls_error(
    tmp_path: Path, upstream: Upstream
) -> None:
    rig = await start_rig(tmp_path, upstream)
    try:
        await rig.api.call("POST", "/api/v1/mcp/t/stop")
        session_id = await rig.api.session_for("auto")
        await rig.api.send(session_id, calls(("t__add", '{"a": 1, "b": 2}')))
        results = [e async for e in session_events(rig, session_id) if e["type"] == "tool.result"]
        # stopped: its tools are not offered, so the model's call names an unknown tool
        assert [(r["data"]["is_error"], r["data"]["tool"]) for r in results] == [(True, "t__add")]
        assert results[0]["data"]["output"] == "unknown tool 't__add'"
    finally:
        await stop_rig(rig)


async def test_a_reload_starts_changes_and_stops_servers(
    tmp_path: Path, upstream: Upstream
) -> None:
    rig = await start_rig(tmp_path, upstream)
    assert rig.server.process is not None
    daemon = rig.server.process.pid
    try:
        first = server_pid(daemon)
        config = tmp_path / "aiosvc.toml"
        text = config.read_text()
        text = text.replace('MARK = "m"', 'MARK = "n"')  # t changes: restarted
        text = text.replace('[mcp.broken]\ncommand = ["/nonexistent/mcp-server"]\n', "")  # gone
        t_table = text[text.index("[mcp.t]") : text.index("[agents.ask]")]
        text += t_table.replace("[mcp.t]", "[mcp.t2]")  # new: started
        config.write_text(text)
        status, body = await rig.api.call("POST", "/api/v1/config/reload")
        assert status == 200, body
        assert {"mcp.broken", "mcp.t.env.MARK", "mcp.t2"} <= set(body["data"]["changed"])
        await gone([first])
        await mcp_status(rig, "t", "connected")
        await mcp_status(rig, "t2", "connected")
        _, body = await rig.api.call("GET", "/api/v1/mcp")
        assert [s["name"] for s in body["data"]] == ["t", "t2"]
        _, body = await rig.api.call("GET", "/api/v1/tools")
        assert [t["name"] for t in body["data"]] == [f"{s}.{n}" for s in ("t", "t2") for n in TOOLS]
    finally:
        await stop_rig(rig)


async def test_a_streamable_http_server_is_used_like_a_stdio_one(
    tmp_path: Path, upstream: Upstream
) -> None:
    port = free_port()
    python = installed.install_dir() / "bin" / "python"
    http_server = subprocess.Popen(
        [str(python), str(MCP_SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        extra = f'[mcp.h]\nurl = "http://127.0.0.1:{port}/mcp"\n\n'
        extra += '[agents.web]\nkind = "openai"\nmodel = "tools"\n'
        extra += f'base_url = "{upstream[1]}"\ntools = ["h.add"]\nauto_approve = ["h"]\n'
        rig = await start_rig(tmp_path, upstream, extra=extra)
        try:
            entry = await mcp_status(rig, "h", "connected")
            assert (entry["transport"], entry["error"]) == ("http", None)
            assert entry["tools"] == [f"h.{name}" for name in TOOLS]
            session_id = await rig.api.session_for("web")
            await rig.api.send(session_id, calls(("h__add", '{"a": 20, "b": 22}')))
            await rig.api.replies(session_id, "complete")
            messages = await rig.api.messages(session_id)
            assert [m["content"] for m in messages if m["role"] == "tool"] == ["42"]
        finally:
            await stop_rig(rig)
    finally:
        http_server.terminate()
        http_server.wait(10)

"""Reading and reloading the configuration of a real ``aiosvc serve``: SIGHUP and
``POST /api/v1/config/reload`` apply the file live without dropping a client, refuse a broken
file with the check-config messages, and report what needs a restart."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import orjson
import pytest

from aiosvc.config import LimitsConfig
from tests.serving import Server, free_port
from tests.test_cli import aiosvc

KEY = "first-key"
BASE = f"""\
[server]
api_keys = ["{KEY}", "second-key"]

[agents.tool]
kind = "echo"
delay_ms = 0

[agents.secretive]
kind = "command"
argv = ["cat"]
env = {{ TOKEN = "s3cret-token" }}
"""
WITH_EXTRA = (
    BASE.replace(
        f'api_keys = ["{KEY}", "second-key"]',
        f'api_keys = ["{KEY}", "second-key"]\nallowed_hosts = ["dash.example"]',
    )
    + '\n[agents.extra]\nkind = "echo"\n'
)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The configuration file the server is started with."""
    path = tmp_path / "aiosvc.toml"
    path.write_text(BASE)
    return path


@pytest.fixture
async def server(db_path: Path, config_file: Path) -> AsyncIterator[Server]:
    """A running server on ``config_file``, stopped (or killed) at the end."""
    running = Server(db_path, config=config_file)
    await running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        assert await running.stop() == 0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that sends the key."""
    async with aiohttp.ClientSession(headers={"X-API-Key": KEY}) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    """One request: its status and JSON body."""
    async with http.request(method, url, json=body, **kwargs) as response:
        return response.status, await response.json()


def log_lines(server: Server, event: str) -> list[dict[str, Any]]:
    """The server's JSON log lines of one event."""
    lines = [orjson.loads(x) for x in server.log().splitlines() if x.startswith("{")]
    return [line for line in lines if line["event"] == event]


async def next_sse_event(response: aiohttp.ClientResponse) -> tuple[str, dict[str, Any]]:
    """The next ``event:`` block of an event stream (comments and retry skipped)."""
    while True:
        block = (await asyncio.wait_for(response.content.readuntil(b"\n\n"), 20)).decode()
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            return fields["event"], orjson.loads(fields["data"])


async def next_ws_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next event frame's event."""
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), 20)
        if frame["type"] == "event":
            event: dict[str, Any] = frame["event"]
            return event


async def test_streams_stay_connected_through_reloads_by_sighup_and_post(
    server: Server, config_file: Path, http: aiohttp.ClientSession
) -> None:
    assert server.process is not None
    ws = await http.ws_connect(server.url + "/api/v1/ws")
    assert (await ws.receive_json())["type"] == "hello"
    await ws.send_json({"op": "subscribe", "topics": ["system", "hooks"], "id": 1})
    assert (await ws.receive_json())["type"] == "ack"
    sse = await http.get(server.url + "/api/v1/events?topics=system,hooks")
    assert await sse.content.readuntil(b"\n\n") == b"retry: 2000\n\n"

    # Before: the agent and the host are unknown.
    created = await call(http, "POST", server.url + "/api/v1/sessions", {"agent": "extra"})
    assert (created[0], created[1]["error"]["code"]) == (422, "unknown_agent")
    host = {"Host": "dash.example"}
    assert (await call(http, "GET", server.url + "/api/v1/sessions", headers=host))[0] == 403

    config_file.write_text(WITH_EXTRA)
    server.process.send_signal(signal.SIGHUP)
    reloaded = {"changed": ["agents.extra", "server.allowed_hosts"], "restart_required": []}
    event = await next_ws_event(ws)
    assert (event["type"], event["topic"], event["data"]) == ("config.reloaded", "system", reloaded)
    assert await next_sse_event(sse) == (
        "config.reloaded",
        {"topic": "system", "ts": event["ts"], "data": reloaded},
    )
    (line,) = log_lines(server, "config_reloaded")
    assert (line["level"], line["changed"], line["restart_required"], line["file"]) == (
        "info",
        reloaded["changed"],
        [],
        str(config_file),
    )

    # After: the new agent answers, the new host is let in.
    status, created = await call(http, "POST", server.url + "/api/v1/sessions", {"agent": "extra"})
    assert status == 201
    url = f"{server.url}/api/v1/sessions/{created['data']['id']}/messages?wait=true"
    status, reply = await call(http, "POST", url, {"content": "hello extra"})
    assert (status, reply["data"]["status"], reply["data"]["content"]) == (
        200,
        "complete",
        "hello extra",
    )
    assert (await call(http, "GET", server.url + "/api/v1/sessions", headers=host))[0] == 200

    # The same through the API; nothing new this time.
    status, body = await call(http, "POST", server.url + "/api/v1/config/reload")
    assert (status, body) == (200, {"data": {"changed": [], "restart_required": []}})
    assert (await next_ws_event(ws))["data"] == {"changed": [], "restart_required": []}
    assert (await next_sse_event(sse))[0] == "config.reloaded"

    # Both streams are still there and get what is published after the reloads.
    status, hook = await call(http, "POST", server.url + "/api/v1/hooks", {"type": "after"})
    assert status == 202
    event = await next_ws_event(ws)
    assert (event["id"], event["type"], event["topic"]) == (
        hook["data"]["event_id"],
        "hook.after",
        "hooks",
    )
    assert (await next_sse_event(sse))[0] == "hook.after"
    assert not ws.closed
    await ws.close()
    sse.close()


BROKEN = [
    ("invalid_toml", "[agents.extra\nkind = 'echo'\n"),
    ("unknown_key", "[limits]\nmax_page_sise = 10\n"),
    ("bad_value", "[limits]\nmax_page_size = 0\n\n[agents.extra]\nkind = 'echo'\ndelay_ms = '1'\n"),
]


async def test_a_broken_file_is_refused_with_the_check_config_messages_and_changes_nothing(
    server: Server, config_file: Path, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    assert server.process is not None
    status, before = await call(http, "GET", server.url + "/api/v1/config")
    assert status == 200
    expected = {
        "invalid_toml": [
            f"{config_file}: invalid TOML: Expected ']' at the end of a table declaration "
            "(at line 1, column 14)"
        ],
        "unknown_key": [
            f"{config_file}: unknown key 'limits.max_page_sise', expected one of: "
            + ", ".join(sorted(field.name for field in attrs.fields(LimitsConfig)))
        ],
        "bad_value": [
            f"{config_file}: limits.max_page_size: expected an integer >= 1, got 0",
            f"{config_file}: agents.extra.delay_ms: expected an integer, got '1'",
        ],
    }
    for name, text in BROKEN:
        config_file.write_text(text)
        checked = aiosvc("check-config", "--config", str(config_file), cwd=tmp_path)
        assert checked.returncode != 0
        assert checked.stderr.splitlines() == [f"aiosvc: {line}" for line in expected[name]]
        status, body = await call(http, "POST", server.url + "/api/v1/config/reload")
        assert (status, body) == (
            400,
            {
                "error": {
                    "code": "invalid_config",
                    "message": "the configuration is invalid; nothing was changed",
                    "status": 400,
                    "details": {"errors": expected[name]},
                }
            },
        ), name
        assert await call(http, "GET", server.url + "/api/v1/config") == (200, before)
        created = await call(http, "POST", server.url + "/api/v1/sessions", {"agent": "extra"})
        assert created[0] == 422
    failures = log_lines(server, "config_reload_failed")
    assert [(f["level"], f["errors"]) for f in failures] == [
        ("error", expected[name]) for name, _ in BROKEN
    ]

    # SIGHUP with a broken file: logged, nothing changed, still serving.
    server.process.send_signal(signal.SIGHUP)
    async with asyncio.timeout(20):
        while len(log_lines(server, "config_reload_failed")) < len(BROKEN) + 1:
            await asyncio.sleep(0.05)
    assert log_lines(server, "config_reload_failed")[-1]["errors"] == expected[BROKEN[-1][0]]
    assert await call(http, "GET", server.url + "/api/v1/config") == (200, before)
    assert log_lines(server, "config_reloaded") == []


async def test_get_config_shows_the_effective_configuration_with_secrets_redacted(
    server: Server, config_file: Path, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.url + "/api/v1/config") as response:
        assert response.status == 200
        raw = await response.read()
    assert b"s3cret-token" not in raw and KEY.encode() not in raw and b"second-key" not in raw
    data = orjson.loads(raw)["data"]
    assert sorted(data) == ["config", "file", "restart_required"]
    assert (data["file"], data["restart_required"]) == (str(config_file), [])
    config = data["config"]
    assert sorted(config) == [
        "agents",
        "approvals",
        "cache",
        "events",
        "limits",
        "log_format",
        "peers",
        "projects",
        "server",
        "storage",
        "streams",
    ]
    assert config["server"]["api_keys"] == ["[redacted]", "[redacted]"]
    assert config["server"]["port"] == server.port
    assert config["storage"] == {"db": str(server.db)}
    assert config["agents"]["secretive"] == {
        "kind": "command",
        "argv": ["cat"],
        "cwd": None,
        "env": {"TOKEN": "[redacted]"},
        "timeout_s": None,
        "kill_grace_s": 3.0,
        "protocol": False,
    }
    assert config["limits"]["max_page_size"] == 500
    # Both routes need a key, like every other.
    async with aiohttp.ClientSession() as anonymous:
        for method, path in (("GET", "/api/v1/config"), ("POST", "/api/v1/config/reload")):
            status, body = await call(anonymous, method, server.url + path)
            assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_a_port_change_waits_for_a_restart_while_live_settings_apply(
    db_path: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port, other = free_port(), free_port()
    config_file = tmp_path / "aiosvc.toml"
    config_file.write_text(BASE.replace("[server]\n", f"[server]\nport = {port}\n"))
    server = Server(db_path, port=port, config=config_file, port_flag=False)
    await server.start()
    try:
        config_file.write_text(
            BASE.replace("[server]\n", f"[server]\nport = {other}\n")
            + "\n[limits]\nmax_page_size = 5\n"
        )
        status, body = await call(http, "POST", server.url + "/api/v1/config/reload")
        assert (status, body) == (
            200,
            {"data": {"changed": ["limits.max_page_size"], "restart_required": ["server.port"]}},
        )
        status, shown = await call(http, "GET", server.url + "/api/v1/config")
        assert shown["data"]["config"]["server"]["port"] == port  # the port it listens on
        assert shown["data"]["restart_required"] == ["server.port"]
        assert shown["data"]["config"]["limits"]["max_page_size"] == 5
        status, refused = await call(http, "GET", server.url + "/api/v1/sessions?limit=6")
        assert (status, refused["error"]["message"]) == (
            400,
            "query parameter 'limit': must be 1 to 5",
        )
        with pytest.raises(aiohttp.ClientConnectionError):
            await call(http, "GET", f"http://127.0.0.1:{other}/health")
    finally:
        assert await server.stop() == 0


async def test_limits_apply_to_the_next_request(
    server: Server, config_file: Path, http: aiohttp.ClientSession
) -> None:
    status, created = await call(http, "POST", server.url + "/api/v1/sessions", {})
    url = f"{server.url}/api/v1/sessions/{created['data']['id']}/messages"
    config_file.write_text(BASE + "\n[limits]\nmax_body_bytes = 200\nmax_content_chars = 50\n")
    status, body = await call(http, "POST", server.url + "/api/v1/config/reload")
    assert body["data"]["changed"] == ["limits.max_body_bytes", "limits.max_content_chars"]
    status, body = await call(http, "POST", url, {"content": "x" * 51})
    assert (status, body["error"]["details"]) == (
        400,
        {"fields": {"content": "must be 1 to 50 characters"}},
    )
    status, body = await call(http, "POST", url, {"content": "x" * 300})
    assert (status, body["error"]["code"]) == (413, "payload_too_large")

    # Raised again: a body far over the start's limit (1 MiB) is read whole, even chunked.
    config_file.write_text(BASE + "\n[limits]\nmax_body_bytes = 4000000\n")
    assert (await call(http, "POST", server.url + "/api/v1/config/reload"))[0] == 200

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"content": "'
        for _ in range(30):
            yield b"y" * 100_000
        yield b'"}'

    headers = {"Content-Type": "application/json"}
    async with http.post(url, data=chunks(), headers=headers) as response:
        body = await response.json()
        # read whole (no 413), then refused by the content length limit (the default again)
        assert (response.status, body["error"]["code"]) == (400, "validation_error")


async def test_a_running_reply_keeps_its_agent_and_the_next_one_finds_it_gone(
    server: Server, config_file: Path, http: aiohttp.ClientSession
) -> None:
    config_file.write_text(BASE + '\n[agents.slow]\nkind = "echo"\ndelay_ms = 300\n')
    assert (await call(http, "POST", server.url + "/api/v1/config/reload"))[0] == 200
    status, created = await call(http, "POST", server.url + "/api/v1/sessions", {"agent": "slow"})
    assert status == 201
    url = f"{server.url}/api/v1/sessions/{created['data']['id']}/messages"
    running = asyncio.create_task(call(http, "POST", url + "?wait=true", {"content": "a b c d e"}))
    async with asyncio.timeout(20):  # until it streams
        while not [m for m in (await call(http, "GET", url))[1]["data"] if m["role"] != "user"]:
            await asyncio.sleep(0.02)
    config_file.write_text(BASE)  # the agent is gone
    status, body = await call(http, "POST", server.url + "/api/v1/config/reload")
    assert body == {"data": {"changed": ["agents.slow"], "restart_required": []}}
    status, reply = await running
    assert (status, reply["data"]["status"], reply["data"]["content"]) == (
        200,
        "complete",
        "a b c d e",
    )
    status, reply = await call(http, "POST", url + "?wait=true", {"content": "again"})
    assert (reply["data"]["status"], reply["data"]["error"]) == (
        "failed",
        {"code": "unknown_agent", "message": "the session's agent 'slow' is no longer configured"},
    )


async def test_a_reload_lowers_the_caps_for_what_comes_afterwards(
    server: Server, config_file: Path
) -> None:
    # 6 connections, of which 3 for long-lived requests (the reserve is at most half), 2 a key
    config_file.write_text(
        BASE + "\n[limits]\nmax_connections = 6\nmax_streams_per_credential = 2\n"
    )
    async with aiohttp.ClientSession(headers={"X-API-Key": KEY}) as reloader:
        status, body = await call(reloader, "POST", server.url + "/api/v1/config/reload")
    assert (status, body["data"]["changed"]) == (
        200,
        ["limits.max_connections", "limits.max_streams_per_credential"],
    )
    connector = aiohttp.TCPConnector(force_close=True)  # one connection a request
    other = {"X-API-Key": "second-key"}
    async with aiohttp.ClientSession(headers={"X-API-Key": KEY}, connector=connector) as http:
        held = [await http.get(server.url + "/api/v1/events") for _ in range(2)]
        try:
            assert [r.status for r in held] == [200, 200]
            status, body = await call(http, "GET", server.url + "/api/v1/events")
            assert (status, body["error"]["code"]) == (429, "too_many_streams")
            held.append(await http.get(server.url + "/api/v1/events", headers=other))
            assert held[-1].status == 200
            status, body = await call(http, "GET", server.url + "/api/v1/events", headers=other)
            assert (status, body["error"]["code"]) == (503, "too_many_streams")
            # Short requests keep the other places, up to the connection cap.
            status, _ = await call(http, "GET", server.url + "/api/v1/sessions")
            assert status == 200
            idle = [(await asyncio.open_connection("127.0.0.1", server.port))[1] for _ in range(3)]
            try:
                await asyncio.sleep(0.2)
                status, body = await call(http, "GET", server.url + "/api/v1/sessions")
                assert (status, body["error"]["code"]) == (503, "too_many_connections")
            finally:
                for writer in idle:
                    writer.close()
        finally:
            for response in held:
                response.close()
        async with asyncio.timeout(10):  # the server notices they are gone
            while (await call(http, "GET", server.url + "/api/v1/sessions"))[0] != 200:
                await asyncio.sleep(0.05)


async def test_a_reload_changes_the_log_level_at_once(server: Server, config_file: Path) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": KEY}) as http:
        await call(http, "GET", server.url + "/health")  # at info: a debug line, not written
        config_file.write_text(BASE.replace("[server]\n", '[server]\nlog_level = "debug"\n'))
        status, body = await call(http, "POST", server.url + "/api/v1/config/reload")
        assert (status, body["data"]["changed"]) == (200, ["server.log_level"])
        async with http.get(server.url + "/health", headers={"X-Request-ID": "after-1"}) as r:
            assert r.status == 200
    await server.settled_log()
    health = [line["request_id"] for line in log_lines(server, "request")]
    assert "after-1" in health
    assert [line for line in log_lines(server, "request") if line["path"] == "/health"] == [
        line for line in log_lines(server, "request") if line["request_id"] == "after-1"
    ]

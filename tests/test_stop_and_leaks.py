"""A stop that waits for nobody, and memory that does not stay behind: replies waiting for an
approval end at once on SIGTERM, a deleted session leaves no lock, a replay leaves no frames."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from aiosvc.app import create_app
from aiosvc.config import Config, EventsConfig
from aiosvc.web.frames import FANOUT
from aiosvc.web.keys import BUS, COMMAND_SERVICE
from tests.conftest import ClientFactory
from tests.helpers import create_session
from tests.process_api import Api
from tests.serving import Server

GRACE_S = 10


def write_config(tmp_path: Path, text: str) -> Path:
    """A config file with this TOML."""
    path = tmp_path / "aiosvc.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_sigterm_with_an_approval_pending_stops_well_within_the_grace_period(
    tmp_path: Path, db_path: Path, servers: list[Server]
) -> None:
    config = write_config(tmp_path, f"[server]\nshutdown_timeout_s = {GRACE_S}\n")
    server = Server(db_path, config=config)
    servers.append(server)
    await server.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.session()
        path = f"/api/v1/sessions/{session_id}/messages"
        status, sent = await api.call("POST", path, {"content": '/tool rm {"path": "/tmp/x"}'})
        assert status == 202
        async with asyncio.timeout(10):
            while not (await api.call("GET", "/api/v1/approvals?status=pending"))[1]["data"]:
                await asyncio.sleep(0.02)
        _, body = await api.call("GET", "/api/v1/approvals?status=pending")
        (approval,) = body["data"]
    started = time.monotonic()
    assert await server.stop() == 0
    took = time.monotonic() - started
    # Nobody can approve once stopping began: the reply ends at once instead of holding the
    # stop for the whole grace period.
    assert took < GRACE_S / 3, took

    again = Server(db_path, config=config, port=server.port)
    servers.append(again)
    await again.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, again)
        reply = next(
            m for m in await api.messages(session_id) if m["id"] == sent["data"]["reply_id"]
        )
        assert reply["status"] == "failed"
        assert reply["error"]["code"] == "interrupted"
        _, body = await api.call("GET", "/api/v1/approvals")
        assert [(a["id"], a["status"]) for a in body["data"]] == [(approval["id"], "expired")]
    assert await again.stop() == 0


async def test_sessions_deleted_while_replies_run_leave_no_lock_behind(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    app = create_app(config)
    client = await aiohttp_client(app)
    service = app[COMMAND_SERVICE]
    for _ in range(20):
        session = await create_session(client, agent="slow")
        url = f"/api/v1/sessions/{session['id']}"
        response = await client.post(url + "/messages", json={"content": "one two three four"})
        assert response.status == 202
        async with asyncio.timeout(10):  # deleted while its reply streams
            while not any(
                m["status"] == "streaming"
                for m in (await (await client.get(url + "/messages")).json())["data"]
            ):
                await asyncio.sleep(0.01)
        assert (await client.delete(url)).status == 204
        # A made-up session named over the WebSocket (which reaches the service) leaves none.
        async with client.ws_connect("/api/v1/ws") as ws:
            await ws.receive_json()
            await ws.send_json({"op": "cancel", "session_id": "ses_madeup", "id": 1})
            assert (await ws.receive_json())["type"] == "error"
    async with asyncio.timeout(10):
        while service.lanes:
            await asyncio.sleep(0.01)
    assert len(service.locks) == 0


async def test_a_replay_leaves_no_frames_in_the_ring_buffer(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    app = create_app(attrs.evolve(config, events=EventsConfig(buffer_size=200)))
    client = await aiohttp_client(app)
    bus = app[BUS]
    for n in range(100):
        response = await client.post("/api/v1/hooks", json={"type": "t", "data": {"n": n}})
        assert response.status == 202
    retained = bus.since(0)
    assert retained is not None
    assert len(retained) >= 100
    assert all(not FANOUT.kept(event) for event in retained)  # live fan-out keeps none

    async with client.ws_connect("/api/v1/ws") as ws:
        await ws.receive_json()
        await ws.send_json({"op": "subscribe", "topics": ["hooks"], "since": 0, "id": 1})
        frames: list[dict[str, Any]] = []
        while len(frames) < 101:
            frames.append(await ws.receive_json())
    response = await client.get(
        "/api/v1/events?topics=hooks", headers={"Last-Event-ID": "0"}, timeout=None
    )
    received = b""
    while received.count(b"event: hook.t") < 100:
        received += await response.content.read(65536)
    response.close()
    assert [f["event"]["data"]["data"]["n"] for f in frames[1:]] == list(range(100))
    # The replays built their frames for themselves: the buffer still holds events only.
    assert all(not FANOUT.kept(event) for event in bus.since(0) or ())


async def test_replays_do_not_grow_a_real_servers_memory(
    tmp_path: Path, db_path: Path, servers: list[Server]
) -> None:
    count, size = 1000, 32 * 1024
    config = write_config(tmp_path, f"[events]\nbuffer_size = {count}\n")
    server = Server(db_path, config=config)
    servers.append(server)
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    payload = "x" * size
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            body = {"type": "big", "data": {"n": n, "payload": payload}}
            async with http.post(server.url + "/api/v1/hooks", json=body) as response:
                assert response.status == 202
        before = rss(pid)
        for _ in range(3):  # each replay would keep a frame per event, for good
            async with http.ws_connect(server.url + "/api/v1/ws", max_msg_size=0) as ws:
                await ws.receive_json()
                await ws.send_json({"op": "subscribe", "topics": ["hooks"], "since": 0})
                for _ in range(count + 1):
                    await ws.receive_json()
        grown = rss(pid) - before
    # The buffer holds about count * size bytes of events; keeping their frames would add as
    # much again. What a replay needs for itself is a batch at a time.
    assert grown < count * size / 2, grown
    assert await server.stop() == 0


def rss(pid: int) -> int:
    """A process's resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")

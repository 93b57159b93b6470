"""A failing disk, end to end against a real ``aiosvc serve``: it says so (507, 503, /health),
never acknowledges what it did not store, and recovers by itself when the disk does.

The full disk is real: the database lives on a tmpfs of its own (``disk`` fixture, root only),
filled to the last page by a filler file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.disks import Disk
from tests.process_api import Api, wait_for_log
from tests.serving import Server, slow_echo_config

WORDS = 30_000  # a message of about 240 KB: no room for it on a full disk


def big_text(tag: str) -> str:
    """A message far larger than what a full disk has room for, in many words."""
    return " ".join(f"{tag}{n:06d}" for n in range(WORDS))


def on_disk(disk: Disk, tmp_path: Path, servers: list[Server], **kwargs: Any) -> Server:
    """A server whose database is on ``disk`` (its log is not: it must outlive a full disk)."""
    server = Server(disk.root / "aiosvc.db", log_dir=tmp_path, **kwargs)
    servers.append(server)
    return server


def stored(disk: Disk, sql: str) -> list[tuple[Any, ...]]:
    """What the database on ``disk`` holds, read beside the running server."""
    conn = sqlite3.connect(f"file:{disk.root / 'aiosvc.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_disk_full_is_507_health_degraded_and_recovers_when_space_frees(
    disk: Disk, tmp_path: Path, servers: list[Server]
) -> None:
    server = on_disk(disk, tmp_path, servers)
    await server.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.session()
        disk.fill()

        path = f"/api/v1/sessions/{session_id}/messages"
        status, body = await api.call("POST", path, {"content": big_text("a")})
        assert status == 507
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message", "status"}
        assert body["error"]["code"] == "insufficient_storage"
        assert body["error"]["status"] == 507
        assert "database or disk is full" in body["error"]["message"]
        assert await api.messages(session_id) == []  # nothing of it was stored

        status, body = await api.call("GET", "/health")
        assert status == 503
        assert body["error"]["code"] == "unavailable"
        details = body["error"]["details"]
        assert details["status"] == "unavailable"
        assert details["db"] == "degraded"
        assert "database or disk is full" in details["db_error"]
        # Reads go on while writes cannot.
        status, body = await api.call("GET", f"/api/v1/sessions/{session_id}")
        assert status == 200

        disk.free()  # no restart: the daemon notices by itself
        body = await api.until("GET", "/health", 200)
        assert body["data"]["db"] == "ok"
        status, body = await api.call("POST", path + "?wait=true", {"content": "hello again"})
        assert status == 200, body
        assert body["data"]["status"] == "complete"
        assert body["data"]["content"] == "hello again"
    assert await server.stop() == 0
    assert '"event":"write_failed"' in server.log()


async def test_a_final_write_that_fails_is_retried_and_lands_when_space_frees(
    disk: Disk, tmp_path: Path, servers: list[Server]
) -> None:
    server = on_disk(disk, tmp_path, servers, config=slow_echo_config(tmp_path, delay_ms=300))
    await server.start()
    text = big_text("b")
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.session()
        url = f"/api/v1/sessions/{session_id}/messages?wait=true"
        waiting = asyncio.create_task(api.call("POST", url, {"content": text}))
        await api.replies(session_id, "streaming")
        disk.fill()  # while it streams: its final write (the whole text) finds no room
        await wait_for_log(server, '"event":"write_failed"')
        assert not waiting.done()  # the reply waits for room, it does not fail at once
        disk.free()
        status, body = await waiting
        assert status == 200, body
        assert body["data"]["status"] == "complete"
        assert body["data"]["content"] == text
        status, body = await api.call("GET", f"/api/v1/sessions/{session_id}")
        assert body["data"]["status"] == "idle"
    assert await server.stop() == 0


async def test_a_reply_that_cannot_be_stored_fails_in_memory_and_in_the_database(
    disk: Disk, tmp_path: Path, servers: list[Server]
) -> None:
    config = slow_echo_config(tmp_path, delay_ms=300)
    server = on_disk(disk, tmp_path, servers, config=config)
    await server.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.session()
        url = f"/api/v1/sessions/{session_id}/messages?wait=true"
        waiting = asyncio.create_task(api.call("POST", url, {"content": big_text("c")}))
        (reply,) = await api.replies(session_id, "streaming")
        disk.fill()  # and it stays full: the reply gives up
        status, body = await waiting
        # The user message was stored, so the exchange is answered as it ended: failed.
        assert status == 200, body
        failed = body["data"]
        assert failed["id"] == reply["id"]
        assert failed["status"] == "failed"
        assert failed["content"] == ""
        assert failed["error"]["code"] == "insufficient_storage"
        assert failed["error"]["message"].startswith("the reply could not be stored: ")
        # Memory holds no reply streaming and no command running.
        history = await api.messages(session_id)
        assert [m["status"] for m in history] == ["complete", "failed"]
        _, body = await api.call("GET", f"/api/v1/sessions/{session_id}")
        assert body["data"]["status"] == "idle"
        assert body["data"]["message_count"] == 2
        command_id = stored(disk, "SELECT id FROM commands")[0][0]
        _, body = await api.call("GET", f"/api/v1/commands/{command_id}")
        assert body["data"]["status"] == "failed"
        assert body["data"]["error"] == failed["error"]
        disk.free()  # the failure is recorded as soon as there is room
        async with asyncio.timeout(20):
            while stored(disk, "SELECT status FROM messages ORDER BY seq") != [
                ("complete",),
                ("failed",),
            ]:
                await asyncio.sleep(0.1)
        assert stored(disk, "SELECT status FROM commands") == [("failed",)]
    assert await server.stop() == 0

    restarted = on_disk(disk, tmp_path, servers, config=config)
    await restarted.start()
    async with aiohttp.ClientSession() as http:
        history = await Api(http, restarted).messages(session_id)
        assert [m["status"] for m in history] == ["complete", "failed"]
        # What the database says is what memory said, not the restart's "interrupted".
        assert history[1]["error"] == failed["error"]
    assert await restarted.stop() == 0


async def test_a_restart_on_a_full_disk_serves_reads_and_settles_once_there_is_room(
    disk: Disk, tmp_path: Path, servers: list[Server]
) -> None:
    config = slow_echo_config(tmp_path, delay_ms=400)
    server = on_disk(disk, tmp_path, servers, config=config)
    await server.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.session()
        path = f"/api/v1/sessions/{session_id}/messages"
        status, first = await api.call("POST", path, {"content": "one two three four five"})
        assert status == 202
        status, queued = await api.call("POST", path, {"content": "queued behind it"})
        assert status == 202
        await api.replies(session_id, "streaming")
    server.kill()  # mid-reply: the next start has work to settle
    disk.fill()

    restarted = on_disk(disk, tmp_path, servers, config=config)
    await restarted.start(status=503)  # it starts, and says why it is not ready
    async with aiohttp.ClientSession() as http:
        api = Api(http, restarted)
        status, body = await api.call("GET", "/health")
        assert status == 503
        assert body["error"]["details"]["db"] == "degraded"
        assert "database or disk is full" in body["error"]["details"]["db_error"]
        # Reads work (the database as the previous run left it); commands are refused.
        status, body = await api.call("GET", f"/api/v1/sessions/{session_id}")
        assert status == 200
        status, body = await api.call("POST", "/api/v1/sessions", {})
        assert status == 507
        assert body["error"]["code"] == "insufficient_storage"
        assert "cannot take commands yet" in body["error"]["message"]
        assert '"event":"startup_deferred"' in restarted.log()

        disk.free()
        await api.until("GET", "/health", 200)
        replies = await api.messages(session_id)
        interrupted = next(m for m in replies if m["id"] == first["data"]["reply_id"])
        assert interrupted["status"] == "failed"
        assert interrupted["error"]["code"] == "interrupted"
        # The queued reply was kept, and runs now.
        (done,) = [m for m in await api.replies(session_id, "complete") if m["role"] == "assistant"]
        assert done["id"] == queued["data"]["reply_id"]
        assert done["content"] == "queued behind it"
    assert await restarted.stop() == 0


async def test_a_start_that_cannot_open_the_database_says_the_disk_is_full(
    disk: Disk, tmp_path: Path, servers: list[Server]
) -> None:
    server = on_disk(disk, tmp_path, servers)
    await server.start()
    assert await server.stop() == 0  # a clean stop removes the WAL files: opening needs room
    disk.fill()
    again = on_disk(disk, tmp_path, servers)
    with pytest.raises(RuntimeError, match="exited early"):
        await again.start()
    assert again.process is not None
    assert again.process.wait() == 1
    assert "if the disk is full, free some space and start again" in again.log()
    assert "0 bytes free" in again.log() or "bytes free on the disk" in again.log()

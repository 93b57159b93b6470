"""The database failing under a real ``aiosvc serve`` in other ways than a full disk: its file
deleted, its write connection lost, a history that cannot be read. Each is reported (503 in the
envelope, /health), nothing waits forever, and nothing is silently replaced."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests import installed
from tests.process_api import Api, wait_for_log
from tests.serving import Server

#: ``aiosvc`` with a switch that closes the write connection (run by the installed Python).
FAULT_SERVER = Path(__file__).with_name("fault_server.py")


async def start(
    servers: list[Server], db: Path, *, port: int | None = None, wrapper: Path | None = None
) -> Server:
    """Start a server on ``db`` and register it for cleanup."""
    server = Server(db, port=port, wrapper=wrapper)
    servers.append(server)
    await server.start()
    return server


def migrate(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``aiosvc migrate`` on ``db``."""
    argv = installed.argv("migrate", "--db", str(db), *args)
    return subprocess.run(
        argv, capture_output=True, text=True, env=installed.environ(), check=False
    )


async def test_a_deleted_database_refuses_writes_and_is_not_recreated_at_start(
    db_path: Path, servers: list[Server]
) -> None:
    server = await start(servers, db_path)
    marker = db_path.with_name(db_path.name + ".created")
    assert marker.exists()  # a first run creates the database, and says it did
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.session()
        db_path.unlink()  # while it runs

        status, body = await api.call("POST", "/api/v1/sessions", {"title": "lost?"})
        assert status == 503
        assert set(body["error"]) == {"code", "message", "status"}
        assert body["error"]["code"] == "database_unavailable"
        assert "was deleted or replaced while in use" in body["error"]["message"]
        status, body = await api.call("PATCH", f"/api/v1/sessions/{session_id}", {"title": "x"})
        assert status == 503
        _, body = await api.call("GET", f"/api/v1/sessions/{session_id}")
        assert body["data"]["title"] == ""  # memory kept what the database had

        status, body = await api.call("GET", "/health")
        assert status == 503
        assert body["error"]["details"]["db"] == "error"
        assert "was deleted or replaced" in body["error"]["details"]["db_error"]
    assert await server.stop() == 0

    again = Server(db_path, port=server.port)
    with pytest.raises(RuntimeError, match="exited early"):
        await again.start()
    assert again.process is not None
    assert again.process.wait() == 1
    assert "does not exist, but a database was there before" in again.log()
    assert "aiosvc migrate --create" in again.log()
    assert not db_path.exists()  # nothing was created in its place

    refused = migrate(db_path)
    assert refused.returncode == 1
    assert "does not exist, but a database was there before" in refused.stderr
    assert not db_path.exists()
    created = migrate(db_path, "--create")
    assert created.returncode == 0, created.stderr
    fresh = await start(servers, db_path)
    async with aiohttp.ClientSession() as http:
        status, body = await Api(http, fresh).call("GET", "/api/v1/sessions")
        assert (status, body["total"]) == (200, 0)
    assert await fresh.stop() == 0


async def test_a_lost_write_connection_fails_the_waiting_write_and_the_daemon_goes_on(
    db_path: Path, servers: list[Server]
) -> None:
    server = await start(servers, db_path, wrapper=FAULT_SERVER)
    assert server.process is not None
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.session()
        path = f"/api/v1/sessions/{session_id}/messages"
        server.process.send_signal(signal.SIGUSR1)
        await wait_for_log(server, "fault_injected")

        # The write meets aiosqlite's ValueError: it fails (it used to hang, holding the
        # session's lock, and every later write with it).
        async with asyncio.timeout(10):
            status, body = await api.call("POST", path, {"content": "during"})
        assert status == 503
        assert body["error"]["code"] == "database_unavailable"
        assert "connection was lost" in body["error"]["message"]
        assert await api.messages(session_id) == []

        # The writer goes on, on a new connection; the session's lock was released.
        async with asyncio.timeout(10):
            status, body = await api.call("POST", path + "?wait=true", {"content": "after"})
        assert status == 200, body
        assert body["data"]["content"] == "after"
        status, body = await api.call("GET", "/health")
        assert status == 200
    assert await server.stop() == 0
    assert '"event":"database_reconnected"' in server.log()


def corrupt_page_holding(db: Path, needle: bytes) -> None:
    """Overwrite the database page that holds ``needle`` with zeros."""
    data = db.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    offset = data.rindex(needle)
    page = offset // page_size
    with db.open("r+b") as out:
        out.seek(page * page_size)
        out.write(b"\0" * page_size)


async def test_a_history_that_cannot_be_read_fails_every_reader_never_empty(
    db_path: Path, servers: list[Server]
) -> None:
    server = await start(servers, db_path)
    async with aiohttp.ClientSession() as http:
        session_id = await Api(http, server).session()
    assert await server.stop() == 0
    # A long history, its last message on a database page about to be damaged.
    with sqlite3.connect(db_path) as conn:
        rows = [
            (f"msg_{n:08d}", session_id, "user", f"message {n} " + "x" * 60, "complete", "t")
            for n in range(20_000)
        ]
        rows.append(("msg_last", session_id, "user", "NEEDLE-last-message", "complete", "t"))
        conn.executemany(
            "INSERT INTO messages (id, session_id, role, content, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()

    server = await start(servers, db_path, port=server.port)
    corrupt_page_holding(db_path, b"NEEDLE-last-message")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        api = Api(http, server)
        await asyncio.gather(*(api.call("GET", "/health") for _ in range(16)))  # 16 connections
        # Pages are read on their own: those before the damage read well.
        status, body = await api.call("GET", f"/api/v1/sessions/{session_id}/messages")
        assert (status, body["data"][0]["id"]) == (200, "msg_00000000")
        path = f"/api/v1/sessions/{session_id}/messages?limit=500&offset=19900"
        answers = await asyncio.gather(*(api.call("GET", path) for _ in range(16)))
        # Never an empty page (an agent would run with no context): the error, for all.
        assert [status for status, _ in answers] == [503] * 16, answers
        for _, body in answers:
            assert body["error"]["code"] == "database_unavailable"
            assert "malformed" in body["error"]["message"]
        status, body = await api.call("GET", path)
        assert status == 503  # and not cached as empty afterwards
    await server.stop()

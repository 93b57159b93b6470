"""One daemon per database, through real ``aiosvc serve`` processes: a second one on the same
file exits at once naming the holder and changes nothing; a daemon that cannot listen changes
nothing; a crashed holder never blocks a restart."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.serving import Server, free_port
from tests.test_cli import aiosvc

Servers = Callable[..., Server]


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """Make :class:`Server` objects; any still running at the end is killed."""
    made: list[Server] = []

    def make(db: Path, **kwargs: Any) -> Server:
        server = Server(db, **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        if server.process is not None and server.process.poll() is None:
            server.kill()
        elif server.process is not None:
            await server.stop()  # (closes its log)


async def refused(server: Server) -> tuple[int, float, str]:
    """Start a server expected to refuse: its exit status, seconds from launch to exit, log."""
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="aiosvc exited early"):
        await server.start()
    elapsed = time.monotonic() - started
    code = await server.stop()
    return code, elapsed, server.log()


def startup_cost(cwd: Path) -> float:
    """Seconds the interpreter takes to load aiosvc's server and exit, here and now: the part
    of a refusal's time that is not aiosvc's doing. (``check-config`` loads the modules
    ``serve`` does; ``--version`` no longer does, the command line loading them only for the
    server's commands.)"""
    started = time.monotonic()
    db = str(cwd / "startup-cost.db")
    assert aiosvc("check-config", "--db", db, cwd=cwd).returncode == 0
    return time.monotonic() - started


def locked_message(db: Path, pid: int) -> str:
    """What a second daemon on ``db`` says when process ``pid`` holds it."""
    return (
        f"aiosvc: {db} is in use by process {pid} (an aiosvc serve or migrate holds "
        f"{db}.lock); stop it first, or use another database with --db\n"
    )


def digest(*paths: Path) -> list[str]:
    """The content of each file (absent: empty), hashed."""
    return [hashlib.sha256(p.read_bytes() if p.exists() else b"").hexdigest() for p in paths]


def wal_files(db: Path) -> tuple[Path, Path]:
    """The database and its write-ahead log."""
    return db, db.with_name(db.name + "-wal")


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    """One request: its status and JSON body."""
    async with http.request(method, url, json=body) as response:
        return response.status, await response.json()


async def snapshot(http: aiohttp.ClientSession, server: Server) -> Any:
    """Every session and its whole history, as the API shows them."""
    _, sessions = await call(http, "GET", server.url + "/api/v1/sessions?limit=500")
    histories = {}
    for session in sessions["data"]:
        url = f"{server.url}/api/v1/sessions/{session['id']}/messages?limit=500"
        histories[session["id"]] = (await call(http, "GET", url))[1]
    return sessions, histories


async def test_a_second_daemon_on_the_same_database_exits_at_once_naming_the_holder(
    db_path: Path, servers: Servers
) -> None:
    first = servers(db_path)
    await first.start()
    assert first.process is not None
    async with aiohttp.ClientSession() as http:
        status, created = await call(http, "POST", first.url + "/api/v1/sessions", {"title": "t"})
        assert status == 201
        url = f"{first.url}/api/v1/sessions/{created['data']['id']}/messages?wait=true"
        assert (await call(http, "POST", url, {"content": "kept"}))[0] == 200
        before = await snapshot(http, first)
        files = digest(*wal_files(db_path))

        baseline = startup_cost(db_path.parent)
        second = servers(db_path)  # another port, the same file
        code, elapsed, log = await refused(second)
        assert code == 1
        assert log == locked_message(db_path, first.process.pid)
        # at once: beyond loading the interpreter, it neither waited nor did anything
        assert elapsed - baseline < 2.0, (elapsed, baseline)

        assert digest(*wal_files(db_path)) == files
        assert await snapshot(http, first) == before
        assert (await call(http, "GET", first.url + "/health"))[0] == 200
    assert await first.stop() == 0


JOB = """\
import sys, time
with open(sys.argv[1], "a") as log:
    log.write(sys.argv[2] + "\\n")
time.sleep(0.3)
print("ran", sys.argv[2])
"""


async def test_queued_jobs_run_exactly_once_while_a_second_daemon_tries_to_start(
    db_path: Path, tmp_path: Path, servers: Servers
) -> None:
    script, runs = tmp_path / "job.py", tmp_path / "runs.txt"
    script.write_text(JOB)
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        f'[agents.job]\nkind = "command"\nargv = ["{sys.executable}", "{script}", '
        f'"{runs}", "{{prompt}}"]\n'
    )
    first = servers(db_path, config=config)
    await first.start()
    prompts = [f"job-{n}" for n in range(8)]
    async with aiohttp.ClientSession() as http:
        status, created = await call(http, "POST", first.url + "/api/v1/sessions", {"agent": "job"})
        assert status == 201
        session_url = f"{first.url}/api/v1/sessions/{created['data']['id']}"
        for prompt in prompts:  # queued behind one another in the session's lane
            assert (await call(http, "POST", session_url + "/messages", {"content": prompt}))[
                0
            ] == 202
        code, _, log = await refused(servers(db_path, config=config))
        assert code == 1
        assert "is in use by process" in log

        async def finished() -> list[dict[str, Any]]:
            _, history = await call(http, "GET", session_url + "/messages?limit=500")
            return [m for m in history["data"] if m["role"] == "assistant"]

        async with asyncio.timeout(60):
            while len(replies := await finished()) < len(prompts) or any(
                r["status"] != "complete" for r in replies
            ):
                await asyncio.sleep(0.05)
    assert [r["content"] for r in replies] == [f"ran {p}\n" for p in prompts]
    assert runs.read_text().splitlines() == prompts  # each once, in order
    assert await first.stop() == 0


def reply_states(db: Path) -> list[tuple[str, str | None]]:
    """The assistant messages' status and error, read from the file directly."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT status, error FROM messages WHERE role = 'assistant' ORDER BY seq"
        ).fetchall()
    conn.close()
    return [(row[0], row[1]) for row in rows]


async def test_a_daemon_that_cannot_listen_recovers_nothing(
    db_path: Path, tmp_path: Path, servers: Servers
) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text('[agents.slow]\nkind = "echo"\ndelay_ms = 5000\n')
    crashed = servers(db_path, config=config)
    await crashed.start()
    async with aiohttp.ClientSession() as http:
        status, created = await call(
            http, "POST", crashed.url + "/api/v1/sessions", {"agent": "slow"}
        )
        assert status == 201
        url = f"{crashed.url}/api/v1/sessions/{created['data']['id']}/messages"
        assert (await call(http, "POST", url, {"content": "one two three four"}))[0] == 202
        async with asyncio.timeout(30):
            while not [
                m for m in (await call(http, "GET", url))[1]["data"] if m["status"] == "streaming"
            ]:
                await asyncio.sleep(0.05)
    crashed.kill()  # a reply left streaming, and the lock file with a dead PID in it
    files = digest(*wal_files(db_path))

    # The port is taken (bound, not listening: the start's health probes are refused rather
    # than left waiting on a backlog nobody accepts from).
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        code, _, log = await refused(servers(db_path, port=port, config=config))
    assert code == 1
    assert log == f"aiosvc: cannot listen on http://127.0.0.1:{port}: Address already in use\n"
    assert digest(*wal_files(db_path)) == files  # no recovery, no migration, nothing
    assert reply_states(db_path) == [("streaming", None)]

    good = servers(db_path, config=config)
    await good.start()
    ((state, error),) = reply_states(db_path)
    assert state == "failed"
    assert error is not None and '"code":"interrupted"' in error
    assert await good.stop() == 0


async def test_a_restart_after_sigkill_is_not_blocked_by_the_lock_file(
    db_path: Path, servers: Servers
) -> None:
    lock = db_path.with_name(db_path.name + ".lock")
    crashed = servers(db_path)
    await crashed.start()
    assert crashed.process is not None
    assert lock.read_text() == f"{crashed.process.pid}\n"
    crashed.kill()
    assert lock.read_text() == f"{crashed.process.pid}\n"  # stale: nobody holds it

    restarted = servers(db_path, port=free_port())
    await restarted.start()
    assert restarted.process is not None
    assert lock.read_text() == f"{restarted.process.pid}\n"
    assert await restarted.stop() == 0


async def test_migrate_refuses_a_database_a_daemon_holds(db_path: Path, servers: Servers) -> None:
    server = servers(db_path)
    await server.start()
    assert server.process is not None
    result = aiosvc("migrate", "--db", str(db_path), cwd=db_path.parent)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] + "\n" == locked_message(db_path, server.process.pid)
    assert await server.stop() == 0

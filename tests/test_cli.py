"""The ``aiosvc`` command as a real process: exit codes, exact messages, and refusals."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import aiohttp
import pytest

from aiosvc import __version__
from aiosvc.config import default_db_path
from aiosvc.store.db import schema_version
from tests import installed
from tests.serving import free_port


def aiosvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``aiosvc ARGS`` to completion in ``cwd``."""
    return installed.run(*args, cwd=cwd)


def write_config(tmp_path: Path, text: str) -> Path:
    """Write ``text`` as a config file and return its absolute path."""
    path = tmp_path / "aiosvc.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- check-config and --version


def test_check_config_without_a_file_prints_the_defaults(tmp_path: Path) -> None:
    result = aiosvc("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "config OK (no file, defaults)",
        f"listening on http://127.0.0.1:8420 as computer {socket.gethostname()!r}",
        "api keys: none (loopback only)",
        f"database: {default_db_path()}",
        "agents: echo (echo, default)",
        "log format: auto (json unless stderr is a terminal)",
        "log level: info",
    ]
    assert result.stderr == ""


def test_check_config_with_a_good_file_names_it(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[server]\nport = 9000\ncomputer = "box"\napi_keys = ["k1", "k2"]\n'
        '[agents]\ndefault = "slow"\n[agents.slow]\nkind = "echo"\ndelay_ms = 5\n',
    )
    result = aiosvc("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"config OK ({path})"
    assert lines[1] == "listening on http://127.0.0.1:9000 as computer 'box'"
    assert lines[2] == "api keys: 2 configured"
    assert lines[4] == "agents: echo (echo), slow (echo, default)"
    assert "k1" not in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[server]\nport = "80"\n', "server.port: expected an integer, got '80'"),
        (
            "[server]\nshutdown_timeout_s = true\n",
            "server.shutdown_timeout_s: expected a number, got true",
        ),
        (
            '[agents.x]\nkind = "magic"\n',
            "agents.x.kind: unknown agent kind 'magic', expected one of: command, echo, openai",
        ),
    ],
    ids=["wrong-type", "bool-for-number", "unknown-agent-kind"],
)
def test_check_config_rejects_a_bad_file_naming_file_key_and_expectation(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write_config(tmp_path, text)
    result = aiosvc("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"aiosvc: {path}: {problem}\n"


def test_check_config_rejects_an_unknown_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\nprot = 1\n")
    result = aiosvc("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"aiosvc: {path}: unknown key 'server.prot'")


def test_unknown_key_message_says_what_was_expected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\nprot = 1\n")
    result = aiosvc("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"aiosvc: {path}: unknown key 'server.prot'")
    assert "expected" in line
    assert "port" in line.removeprefix(f"aiosvc: {path}: unknown key 'server.prot'")


TWO_PROBLEMS = '[server]\nport = "80"\n[agents.x]\nkind = "magic"\n'


def two_problems(path: Path) -> list[str]:
    """The lines naming both problems of :data:`TWO_PROBLEMS` written at ``path``."""
    return [
        f"{path}: server.port: expected an integer, got '80'",
        f"{path}: agents.x.kind: unknown agent kind 'magic', "
        "expected one of: command, echo, openai",
    ]


def test_every_problem_of_a_file_is_reported_and_serve_refuses_it_too(tmp_path: Path) -> None:
    path = write_config(tmp_path, TWO_PROBLEMS)
    for command in ("check-config", "serve"):
        result = aiosvc(command, "--config", str(path), cwd=tmp_path)
        assert result.returncode == 2, command
        assert result.stdout == ""
        lines = [line.removeprefix("aiosvc: ") for line in result.stderr.splitlines()]
        assert lines == two_problems(path)
    assert not (tmp_path / "aiosvc.db").exists()


def test_every_problem_line_carries_the_program_name(tmp_path: Path) -> None:
    path = write_config(tmp_path, TWO_PROBLEMS)
    result = aiosvc("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"aiosvc: {line}" for line in two_problems(path)]


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    result = aiosvc("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"aiosvc: {path}: file not found\n"


def test_version(tmp_path: Path) -> None:
    result = aiosvc("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"aiosvc {__version__}\n"
    assert __version__ == "0.1.0"


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = aiosvc(cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "the following arguments are required: COMMAND" in result.stderr


# ---- migrate


def user_version(path: Path) -> int:
    """The database file's ``PRAGMA user_version``."""
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return version


def test_migrate_applies_then_reports_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "state" / "new.db"
    first = aiosvc("migrate", "--db", str(db), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"{db}: applied 0001_initial.sql\n{db}: applied 0002_list_indexes.sql\n"
        f"{db}: applied 0003_logins.sql\n{db}: applied 0004_stats_indexes.sql\n"
        f"{db}: applied 0005_approvals_and_session_options.sql\n"
    )
    assert user_version(db) == schema_version() == 5
    again = aiosvc("migrate", "--db", str(db), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{db}: up to date (schema version 5)\n"
    assert user_version(db) == 5


# ---- serve refusing to start


GARBAGE = bytes(range(256)) * 16


def test_serve_refuses_garbage_and_leaves_it_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "garbage.db"
    db.write_bytes(GARBAGE)
    result = aiosvc("serve", "--db", str(db), "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"aiosvc: {db}: not a usable SQLite database: file is not a database\n"
    assert db.read_bytes() == GARBAGE
    # no -wal, no -shm; the (empty, unlocked) lock file stays: see aiosvc.store.lock
    assert sorted(p.name for p in folder.iterdir()) == ["garbage.db", "garbage.db.lock"]


def test_migrate_refuses_garbage_too(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(GARBAGE)
    result = aiosvc("migrate", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"aiosvc: {db}: not a usable SQLite database: file is not a database\n"
    assert db.read_bytes() == GARBAGE


def test_serve_and_migrate_refuse_a_newer_database(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    assert aiosvc("migrate", "--db", str(db), cwd=tmp_path).returncode == 0
    newer = schema_version() + 98
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    expected = (
        f"aiosvc: {db}: the database has schema version {newer}, newer than this aiosvc "
        f"understands ({schema_version()}); upgrade aiosvc or use another file"
    )
    for args in (["serve", "--port", str(free_port())], ["migrate"]):
        result = aiosvc(*args, "--db", str(db), cwd=tmp_path)
        assert result.returncode == 1, args
        assert result.stdout == ""
        assert result.stderr.splitlines()[-1] == expected
        assert user_version(db) == newer


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_serve_refuses_a_public_address_without_an_api_key(tmp_path: Path, host: str) -> None:
    db = tmp_path / "never.db"
    result = aiosvc(
        "serve", "--host", host, "--port", str(free_port()), "--db", str(db), cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"aiosvc: refusing to listen on {host!r} without an API key: anyone who can reach it "
        "could run agents. Set server.api_keys (or AIOSVC_API_KEYS), or bind a loopback "
        "address such as 127.0.0.1\n"
    )
    assert not db.exists()  # refused before touching anything


def test_serve_refuses_a_port_that_is_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = aiosvc("serve", "--port", str(port), "--db", str(tmp_path / "a.db"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    # bound before the database is opened: nothing else was done, nothing logged
    assert (
        result.stderr
        == f"aiosvc: cannot listen on http://127.0.0.1:{port}: Address already in use\n"
    )
    assert not (tmp_path / "a.db").exists()


# ---- serve on loopback starts and stops


async def wait_for_health(process: subprocess.Popen[bytes], url: str, timeout: float = 30) -> None:
    """Poll ``url`` until it answers 200; fail if the process exits first."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            assert process.poll() is None, f"aiosvc exited early with {process.returncode}"
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        body = await response.json()
                        assert body["data"]["status"] == "ok"
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def wait_for_exit(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """Wait for the process to exit, bounded, and return its status."""
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(None, process.wait), timeout)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_serve_on_loopback_starts_and_stops_on_sigterm(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], host: str
) -> None:
    port = free_port()
    db = tmp_path / "a.db"
    argv = installed.argv("serve", "--host", host, "--port", str(port))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--db", str(db)], cwd=tmp_path, env=installed.environ(), stdout=out, stderr=out
        )
    processes.append(process)
    await wait_for_health(process, f"http://127.0.0.1:{port}/health")
    assert db.exists()
    process.send_signal(signal.SIGTERM)
    assert await wait_for_exit(process) == 0
    assert b"service_stopped" in log.read_bytes()

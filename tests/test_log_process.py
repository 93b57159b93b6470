"""What a real ``aiosvc serve`` says about itself: the startup line, the log level (request
lines of polled routes at debug), and the work it recovers after a crash."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from aiosvc import __version__
from aiosvc.config import ConfigError, load_config
from tests.serving import Server

KEYS = ("first-secret-key", "second-secret-key")


def only(server: Server, event: str) -> dict[str, object]:
    (line,) = [e for e in server.events() if e["event"] == event]
    return line


async def test_the_startup_line_says_what_runs_and_how_it_is_reached(
    db_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "aiosvc.toml"
    keys = ", ".join(f'"{k}"' for k in KEYS)
    config.write_text(
        f'[server]\napi_keys = [{keys}]\n\n[agents.shell]\nkind = "command"\nargv = ["cat"]\n'
    )
    server = Server(db_path, config=config)
    await server.start()
    assert await server.stop() == 0
    line = only(server, "listening")
    assert line == {
        "event": "listening",
        "level": "info",
        "logger": "aiosvc.serve",
        "timestamp": line["timestamp"],
        "version": __version__,
        "config": str(config),
        "db": str(db_path),
        "addresses": [server.url],
        "agents": {"echo": "echo", "shell": "command"},
        "default_agent": "echo",
        "auth": "keys",
        "key_count": 2,
        "log_level": "info",
    }
    for key in KEYS:
        assert key not in server.log()


async def requests_logged(server: Server) -> dict[str, str]:
    """Poll /health and /metrics and list sessions; each route's request line level."""
    async with aiohttp.ClientSession() as http:
        for path in ("/health", "/health", "/metrics", "/api/v1/sessions"):
            async with http.get(server.url + path) as response:
                assert response.status == 200
    await server.settled_log()
    return {e["path"]: e["level"] for e in server.events() if e["event"] == "request"}


async def test_polled_routes_are_logged_at_debug_only(db_path: Path, tmp_path: Path) -> None:
    quiet = Server(db_path)
    await quiet.start()  # it polls /health itself until the server answers
    try:
        assert await requests_logged(quiet) == {"/api/v1/sessions": "info"}
        started = only(quiet, "listening")
        assert (started["log_level"], started["config"]) == ("info", None)
        assert (started["auth"], started["key_count"]) == ("loopback_only", 0)
    finally:
        assert await quiet.stop() == 0
    for server in (
        Server(tmp_path / "flag.db", args=["--log-level", "debug"]),
        Server(tmp_path / "env.db", env={"AIOSVC_LOG_LEVEL": "debug"}),
    ):
        await server.start()
        try:
            assert await requests_logged(server) == {
                "/health": "debug",
                "/metrics": "debug",
                "/api/v1/sessions": "info",
            }
            assert only(server, "listening")["log_level"] == "debug"
        finally:
            assert await server.stop() == 0


def test_a_log_level_is_one_of_four(tmp_path: Path) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text('[server]\nlog_level = "loud"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={"AIOSVC_LOG_LEVEL": "INFO"}, overrides={"log_level": "trace"})
    wanted = "expected one of: debug, error, info, warning"
    assert caught.value.errors == (
        f"{config}: server.log_level: {wanted}, got 'loud'",
        f"<environment>: AIOSVC_LOG_LEVEL: {wanted}, got 'INFO'",
        f"<command line>: --log-level: {wanted}, got 'trace'",
    )
    config.write_text('[server]\nlog_level = "warning"\n')
    assert load_config(config, env={}).server.log_level == "warning"
    chosen = load_config(config, env={"AIOSVC_LOG_LEVEL": "error"}, overrides={"log_level": None})
    assert chosen.server.log_level == "error"
    flag = load_config(None, env={"AIOSVC_LOG_LEVEL": "error"}, overrides={"log_level": "debug"})
    assert flag.server.log_level == "debug"
    assert load_config(None, env={}).server.log_level == "info"


def test_serve_refuses_an_unknown_level(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiosvc", "serve", "--log-level", "verbose"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "AIOSVC_DB": str(tmp_path / "a.db")},
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "aiosvc: <command line>: --log-level: expected one of: debug, error, info, warning, "
        "got 'verbose'\n"
    )
    assert not (tmp_path / "a.db").exists()


async def test_work_interrupted_by_a_crash_is_recovered_and_logged(
    db_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        '[server]\nshutdown_timeout_s = 0.1\n\n[agents.slow]\nkind = "echo"\ndelay_ms = 5000\n'
    )
    server = Server(db_path, config=config)
    await server.start()
    async with aiohttp.ClientSession(server.url) as http:
        async with http.post("/api/v1/sessions", json={"agent": "slow"}) as response:
            slow = (await response.json())["data"]["id"]
        async with http.post("/api/v1/sessions", json={}) as response:
            asking = (await response.json())["data"]["id"]
        for content in ("one two three", "queued behind it"):
            async with http.post(f"/api/v1/sessions/{slow}/messages", json={"content": content}):
                pass
        async with http.post(f"/api/v1/sessions/{asking}/messages", json={"content": "/tool ls"}):
            pass
        async with asyncio.timeout(10):
            while True:
                async with http.get("/api/v1/approvals?status=pending") as response:
                    if (await response.json())["data"]:
                        break
                await asyncio.sleep(0.02)
        async with http.get(f"/api/v1/sessions/{slow}") as response:
            assert (await response.json())["data"]["status"] == "running"
    server.kill()
    restarted = Server(db_path, config=config)
    await restarted.start()
    assert await restarted.stop() == 0
    recovered = only(restarted, "recovered_interrupted_work")
    assert (recovered["level"], recovered["logger"]) == ("warning", "aiosvc.commands.startup")
    assert (
        recovered["failed_replies"],
        recovered["expired_approvals"],
        recovered["requeued_replies"],
    ) == (2, 1, 1)  # the slow reply and the one waiting for its approval
    resumed = only(restarted, "replies_resumed")
    assert (resumed["level"], resumed["count"]) == ("info", 1)

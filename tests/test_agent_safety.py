"""Agents are never a way in: no prompt as shell code, no inherited secrets, and output that
always reads back, through a real ``aiosvc serve``."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aiosvc.agents.environment import child_environment
from aiosvc.agents.output import clean_text, clean_value
from aiosvc.config import ConfigError, load_config
from tests.serving import Server

PY = sys.executable
KEY = "k-agent-safety"
AUTH = {"X-API-Key": KEY}
# What the daemon runs with: its own key, another agent's upstream key, systemd's variables.
DAEMON_ENV = {
    "HOME": "/nonexistent-home",
    "LANG": "C.UTF-8",
    "LC_TIME": "C",
    "TERM": "xterm-256color",
    "AIOSVC_API_KEYS": KEY,
    "OPENAI_API_KEY": "sk-upstream-secret",
    "NOTIFY_SOCKET": "/nonexistent/notify",
    "WATCHDOG_USEC": "600000000",
    "LISTEN_FDS": "1",
    "LISTEN_PID": "1",
    "SOME_SECRET": "do-not-leak",
}
CONFIG = f"""
[agents.args]
kind = "command"
argv = ["{PY}", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", "{{prompt}}"]

[agents.env]
kind = "command"
argv = ["env"]
env = {{ CONFIGURED = "yes" }}

[agents.nul]
kind = "command"
argv = ["{PY}", "-c", "import sys; sys.stdout.buffer.write(b'a\\\\x00b\\\\xff')"]
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A daemon with a key and command agents, started with secrets in its environment."""
    config = tmp_path / "aiosvc.toml"
    config.write_text(CONFIG)
    running = Server(tmp_path / "aiosvc.db", config=config, env=DAEMON_ENV)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def call(server: Server, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """One authenticated REST call: its status and the ``data`` (or whole body) it answered."""
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.request(method, server.url + path, **kwargs) as response,
    ):
        body = await response.json() if response.status != 204 else None
        return response.status, body.get("data", body) if isinstance(body, dict) else body


async def reply_to(server: Server, agent: str, content: str) -> dict[str, Any]:
    """Create a session with ``agent``, send ``content`` and wait for the reply."""
    status, session = await call(server, "POST", "/api/v1/sessions", json={"agent": agent})
    assert status == 201, session
    status, reply = await call(
        server,
        "POST",
        f"/api/v1/sessions/{session['id']}/messages?wait=true",
        json={"content": content},
    )
    assert status == 200, reply
    assert isinstance(reply, dict)
    return reply


# ---- {prompt}


def test_a_prompt_inside_a_longer_argument_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "aiosvc.toml"
    path.write_text('[agents.shell]\nkind = "command"\nargv = ["sh", "-c", "echo {prompt}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.errors == (
        f"{path}: agents.shell.argv: {{prompt}} must be a whole argument of its own, got "
        "'echo {prompt}'; better still, leave it out and read the prompt from stdin",
    )


async def test_serve_refuses_a_prompt_embedded_in_shell_code(tmp_path: Path) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text('[agents.shell]\nkind = "command"\nargv = ["sh", "-c", "echo {prompt}"]\n')
    server = Server(tmp_path / "aiosvc.db", config=config)
    with pytest.raises(RuntimeError, match="must be a whole argument of its own"):
        await server.start()
    assert await server.stop() == 2
    assert not (tmp_path / "aiosvc.db").exists()


async def test_the_prompt_is_one_argument_never_shell_code(server: Server) -> None:
    content = "x; id $(id) `id` --version /etc/hostname"
    reply = await reply_to(server, "args", content)
    assert reply["status"] == "complete"
    assert json.loads(reply["content"]) == [content]


# ---- the environment


async def test_agents_get_a_minimal_environment_never_the_daemons_secrets(
    server: Server,
) -> None:
    reply = await reply_to(server, "env", "show me")
    assert reply["status"] == "complete"
    seen = dict(line.split("=", 1) for line in reply["content"].splitlines())
    session_id, reply_id = seen.pop("AIOSVC_SESSION_ID"), seen.pop("AIOSVC_REPLY_ID")
    assert seen.pop("AIOSVC_CONVERSATION").startswith(tempfile.gettempdir())
    assert session_id.startswith("ses_")
    assert reply_id == reply["id"]
    assert seen == {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent-home",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "TERM": "xterm-256color",
        "CONFIGURED": "yes",
    }


def test_the_child_environment_is_built_from_an_allowlist() -> None:
    inherited = {"PATH": "/bin", "LC_ALL": "C", "USER": "me", "AWS_SECRET_ACCESS_KEY": "x"}
    assert child_environment({"A": "1"}, inherited=inherited) == {
        "PATH": "/bin",
        "LC_ALL": "C",
        "A": "1",
    }
    assert child_environment({}, inherited={}) == {"PATH": os.defpath}


# ---- output that always reads back


async def test_nul_in_agent_output_is_replaced_and_the_history_stays_readable(
    server: Server,
) -> None:
    reply = await reply_to(server, "nul", "go")
    assert (reply["status"], reply["content"]) == ("complete", "a\ufffdb\ufffd")
    path = f"/api/v1/sessions/{reply['session_id']}/messages"
    status, history = await call(server, "GET", path)
    assert status == 200
    assert [m["content"] for m in history] == ["go", "a\ufffdb\ufffd"]
    await server.stop()
    await server.start()
    status, again = await call(server, "GET", path)
    assert (status, again) == (200, history)


async def test_a_damaged_row_is_left_out_and_the_rest_of_the_history_reads(
    server: Server,
) -> None:
    reply = await reply_to(server, "args", "hello")
    session_id = reply["session_id"]
    await server.stop()
    with sqlite3.connect(server.db) as db:  # as a bad disk or a hand edit might leave it
        db.execute(
            "UPDATE messages SET status = 'bogus', content = ? WHERE id = ?",
            ["x\x00y", reply["id"]],
        )
    await server.start()
    status, history = await call(server, "GET", f"/api/v1/sessions/{session_id}/messages")
    assert status == 200
    assert [m["content"] for m in history] == ["hello"]
    lines = [json.loads(line) for line in (await server.settled_log()).splitlines()]
    damaged = [line for line in lines if line.get("event") == "row_unreadable"]
    assert [(d["table"], d["id"], d["level"]) for d in damaged] == [
        ("messages", reply["id"], "error")
    ]


def test_clean_text_replaces_only_what_cannot_round_trip() -> None:
    assert clean_text("plain \x1b[2J text") == "plain \x1b[2J text"  # the clients' to escape
    assert clean_text("a\x00b\ud800c\udfff") == "a\ufffdb\ufffdc\ufffd"
    assert clean_value({"k\x00": ["v\ud83d", 1, None]}) == {"k\ufffd": ["v\ufffd", 1, None]}

"""The command agent end to end: programs the tests write, through a real server."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from aiosvc.app import create_app
from aiosvc.config import (
    AgentsConfig,
    CommandAgentConfig,
    Config,
    EchoAgentConfig,
    LimitsConfig,
)
from tests.conftest import ClientFactory
from tests.helpers import Client, create_session, wait_for

PY = sys.executable


def gone(pid: int) -> bool:
    """True when no live process has this pid (a zombie counts as gone: it is dead)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def script(tmp_path: Path, name: str, body: str) -> tuple[str, ...]:
    """Write a Python program for the agent to run; return its argv."""
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return (PY, str(path))


@pytest.fixture
def programs(tmp_path: Path) -> dict[str, CommandAgentConfig]:
    """One agent per behaviour under test."""
    return {
        "cat": CommandAgentConfig(argv=("cat",)),
        "argv": CommandAgentConfig(
            argv=(PY, "-c", "import sys; print('got:', sys.argv[1])", "{prompt}")
        ),
        "where": CommandAgentConfig(
            argv=(PY, "-c", "import os; print(os.getcwd(), os.environ['GREETING'])"),
            cwd=str(tmp_path),
            env={"GREETING": "hello"},
        ),
        "slow": CommandAgentConfig(
            argv=script(
                tmp_path,
                "slow",
                "import sys, time\n"
                "for i in range(5):\n"
                "    print(f'line {i}', flush=True)\n"
                "    time.sleep(0.4)\n",
            )
        ),
        "fail": CommandAgentConfig(
            argv=script(
                tmp_path,
                "fail",
                "import sys\nprint('partial')\nsys.stderr.write('x' * 9000 + 'the end')\n"
                "sys.exit(3)\n",
            )
        ),
        "binary": CommandAgentConfig(
            argv=(PY, "-c", "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe \\xe2\\x82')")
        ),
        "huge": CommandAgentConfig(
            argv=(PY, "-c", "import sys; sys.stdout.write('y' * 3_000_000)")
        ),
        "stubborn": CommandAgentConfig(
            argv=script(
                tmp_path,
                "stubborn",
                "import os, signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print(os.getpid(), flush=True)\n"
                "time.sleep(60)\n",
            ),
            kill_grace_s=0.5,
        ),
        "spawner": CommandAgentConfig(
            argv=script(
                tmp_path,
                "spawner",
                "import subprocess, sys\n"
                "child = subprocess.Popen(['sleep', '60'])\n"
                "print(child.pid, flush=True)\n",
            )
        ),
        "sleepy": CommandAgentConfig(argv=(PY, "-c", "import time; time.sleep(60)"), timeout_s=0.5),
        "missing": CommandAgentConfig(argv=("/nonexistent/agent-program",)),
    }


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, config: Config, programs: dict[str, CommandAgentConfig]
) -> Client:
    backends: dict[str, Any] = {"echo": EchoAgentConfig(), **programs}
    configured = attrs.evolve(
        config,
        agents=AgentsConfig(default="echo", backends=backends),
        limits=LimitsConfig(max_reply_chars=1_000_000),
    )
    return await aiohttp_client(create_app(configured))


async def ask(client: Client, agent: str, content: str = "hello there") -> dict[str, Any]:
    """Send a message to a new session with ``agent`` and wait for the finished reply."""
    session = await create_session(client, agent=agent)
    response = await client.post(
        f"/api/v1/sessions/{session['id']}/messages?wait=true", json={"content": content}
    )
    assert response.status == 200, await response.text()
    reply: dict[str, Any] = (await response.json())["data"]
    return reply


async def test_prompt_on_stdin_and_as_an_argument(client: Client) -> None:
    reply = await ask(client, "cat", "echo me\nsecond line")
    assert (reply["status"], reply["content"], reply["error"]) == (
        "complete",
        "echo me\nsecond line",
        None,
    )
    reply = await ask(client, "argv", "in argv")
    assert reply["content"] == "got: in argv\n"


async def test_cwd_and_env(client: Client, tmp_path: Path) -> None:
    reply = await ask(client, "where")
    assert reply["content"] == f"{tmp_path} hello\n"


async def test_output_streams_as_it_arrives(client: Client) -> None:
    session = await create_session(client, agent="slow")
    async with client.ws_connect(f"/api/v1/sessions/{session['id']}/ws") as ws:
        await ws.receive_json()  # hello
        await ws.send_json({"op": "send_message", "content": "go"})
        arrivals: list[tuple[str, float]] = []
        async with asyncio.timeout(30):
            while not arrivals or arrivals[-1][0] != "message.completed":
                frame = await ws.receive_json()
                if frame["type"] == "event":
                    arrivals.append((frame["event"]["type"], time.monotonic()))
    deltas = [t for kind, t in arrivals if kind == "message.delta"]
    completed = arrivals[-1][1]
    assert len(deltas) >= 3  # line by line, not one lump at exit
    # The first line came long before the program finished (it runs about 2 s).
    assert completed - deltas[0] > 0.5 * (completed - arrivals[0][1])


async def test_non_zero_exit_fails_with_the_tail_of_stderr(client: Client) -> None:
    reply = await ask(client, "fail")
    assert reply["status"] == "failed"
    assert reply["content"] == "partial\n"
    error = reply["error"]
    assert error["code"] == "exit_status"
    assert error["message"].startswith("the program exited with status 3: xxx")
    assert error["message"].endswith("the end")
    assert len(error["message"]) < 4200  # the tail, not all 9 kB


async def test_invalid_utf8_is_replaced_not_fatal(client: Client) -> None:
    reply = await ask(client, "binary")
    assert (reply["status"], reply["content"]) == ("complete", "ok \ufffd\ufffd \ufffd")


async def test_output_over_the_limit_is_cut_and_fails(client: Client) -> None:
    reply = await ask(client, "huge")
    assert reply["status"] == "failed"
    assert reply["error"]["code"] == "reply_too_large"
    assert reply["content"] == "y" * 1_000_000


async def test_timeout_and_a_missing_program(client: Client) -> None:
    reply = await ask(client, "sleepy")
    assert reply["status"] == "failed"
    assert reply["error"] == {
        "code": "timeout",
        "message": "the program did not finish within 0.5 s",
    }
    reply = await ask(client, "missing")
    assert reply["status"] == "failed"
    assert reply["error"]["code"] == "spawn_failed"


async def test_cancel_kills_a_program_that_ignores_sigterm(client: Client) -> None:
    session = await create_session(client, agent="stubborn")
    url = f"/api/v1/sessions/{session['id']}"
    sent = (await (await client.post(url + "/messages", json={"content": "x"})).json())["data"]
    pid: list[int] = []

    async def started() -> bool:
        history = (await (await client.get(url + "/messages")).json())["data"]
        text = history[-1]["content"] if len(history) == 2 else ""
        if text.strip().isdigit():
            pid.append(int(text))
            return True
        return False

    await wait_for(started)
    response = await client.post(url + "/cancel")
    assert (await response.json())["data"]["cancelled"] == [sent["reply_id"]]

    async def settled() -> bool:
        history = (await (await client.get(url + "/messages")).json())["data"]
        return bool(history[1]["status"] == "cancelled")

    await wait_for(settled, timeout=15)
    assert gone(pid[0])


async def test_a_program_that_leaves_a_child_behind_has_it_stopped(client: Client) -> None:
    reply = await ask(client, "spawner")
    assert reply["status"] == "complete"
    child = int(reply["content"])
    async with asyncio.timeout(10):
        while not gone(child):
            await asyncio.sleep(0.05)


async def test_agents_lists_the_non_secret_configuration(client: Client, tmp_path: Path) -> None:
    agents = (await (await client.get("/api/v1/agents?limit=500")).json())["data"]
    where = next(a for a in agents if a["name"] == "where")
    assert where == {
        "name": "where",
        "kind": "command",
        "default": False,
        "config": {
            "argv": [PY, "-c", "import os; print(os.getcwd(), os.environ['GREETING'])"],
            "cwd": str(tmp_path),
            "env": ["GREETING"],  # names only: values may be secrets
            "timeout_s": None,
            "protocol": False,
        },
    }
    assert "hello" not in str(agents)


def test_no_child_of_this_test_run_is_left(programs: dict[str, CommandAgentConfig]) -> None:
    """Every program the tests above started is gone (no zombie of ours either)."""
    mine = os.getpid()
    children = [
        p
        for p in os.listdir("/proc")
        if p.isdigit() and f"PPid:\t{mine}\n" in _status(p) and "State:\tZ" in _status(p)
    ]
    assert children == []


def _status(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""

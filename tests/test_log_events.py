"""What the core logs for an operator: sessions, approvals, replies cancelled or interrupted,
agent failures; captured in-process with structlog's ``capture_logs``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from structlog.testing import capture_logs

from aiosvc.app import create_app
from aiosvc.config import (
    AgentsConfig,
    ApprovalsConfig,
    CommandAgentConfig,
    Config,
    EchoAgentConfig,
)
from aiosvc.web.keys import COMMAND_SERVICE
from tests.conftest import ClientFactory
from tests.helpers import Client, create_session, wait_for

Captured = list[MutableMapping[str, Any]]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Every structlog line the test causes, as dicts."""
    with capture_logs() as lines:
        yield lines


def only(lines: Captured, event: str) -> MutableMapping[str, Any]:
    """The one line of ``event``."""
    found = [line for line in lines if line["event"] == event]
    assert len(found) == 1, [line["event"] for line in lines]
    return found[0]


@pytest.fixture
async def client(aiohttp_client: ClientFactory, config: Config, tmp_path: Path) -> Client:
    """The app with echo agents (one slow), failing programs and quick approval expiry."""
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nsys.stderr.write('bad input\\n')\nsys.exit(3)\n")
    backends: dict[str, Any] = {
        "echo": EchoAgentConfig(),
        "slow": EchoAgentConfig(delay_ms=500),
        "missing": CommandAgentConfig(argv=("/nonexistent/agent-program", "--flag")),
        "fail": CommandAgentConfig(argv=(sys.executable, str(failing))),
        "sleepy": CommandAgentConfig(
            argv=(sys.executable, "-c", "import time; time.sleep(60)"), timeout_s=0.3
        ),
    }
    configured = attrs.evolve(
        config,
        agents=AgentsConfig(default="echo", backends=backends),
        approvals=ApprovalsConfig(timeout_s=0.5),
    )
    return await aiohttp_client(create_app(configured))


async def send(client: Client, session_id: str, content: str, *, wait: bool = False) -> Any:
    """Post a message; the reply (``wait``) or the 202 body."""
    url = f"/api/v1/sessions/{session_id}/messages" + ("?wait=true" if wait else "")
    response = await client.post(url, json={"content": content})
    assert response.status == (200 if wait else 202), await response.text()
    return (await response.json())["data"]


async def session_status(client: Client, session_id: str) -> str:
    status: str = (await (await client.get(f"/api/v1/sessions/{session_id}")).json())["data"][
        "status"
    ]
    return status


async def test_a_session_created_ended_and_deleted(client: Client, captured: Captured) -> None:
    session = await create_session(client, agent="slow", project="site")
    sid = session["id"]
    running = await send(client, sid, "one two three")
    queued = await send(client, sid, "four")

    async def started() -> bool:
        return await session_status(client, sid) == "running"

    await wait_for(started)
    assert (await client.post(f"/api/v1/sessions/{sid}/end")).status == 200
    assert (await client.delete(f"/api/v1/sessions/{sid}")).status == 204
    created = only(captured, "session_created")
    assert created == {
        "event": "session_created",
        "log_level": "info",
        "session_id": sid,
        "agent": "slow",
        "project": "site",
    }
    assert only(captured, "session_ended") == {
        "event": "session_ended",
        "log_level": "info",
        "session_id": sid,
        "replies_cancelled": 2,
    }
    assert only(captured, "queued_replies_cancelled") == {
        "event": "queued_replies_cancelled",
        "log_level": "info",
        "session_id": sid,
        "count": 1,
        "message_ids": [queued["reply_id"]],
    }
    cancelled = only(captured, "reply_cancelled")
    assert cancelled.pop("duration_s") >= 0
    assert cancelled == {
        "event": "reply_cancelled",
        "log_level": "info",
        "agent": "slow",
        "session_id": sid,
        "message_id": running["reply_id"],
    }
    deleted = only(captured, "session_deleted")
    assert deleted == {
        "event": "session_deleted",
        "log_level": "info",
        "session_id": sid,
        "messages": 4,  # two asked, one cancelled while running, one before it started
    }


async def pending_approval(client: Client, session_id: str) -> dict[str, Any]:
    """Wait for the session's pending approval."""
    found: list[dict[str, Any]] = []

    async def pending() -> bool:
        query = f"/api/v1/approvals?status=pending&session_id={session_id}"
        found[:] = (await (await client.get(query)).json())["data"]
        return bool(found)

    await wait_for(pending)
    return found[0]


async def test_approvals_asked_decided_and_expired(client: Client, captured: Captured) -> None:
    sid = (await create_session(client))["id"]
    asked = await send(client, sid, '/tool ls {"path": "."}')
    approval = await pending_approval(client, sid)
    decided = await client.post(f"/api/v1/approvals/{approval['id']}", json={"decision": "deny"})
    assert decided.status == 200
    await wait_for(lambda: _idle(client, sid))
    assert only(captured, "approval_requested") == {
        "event": "approval_requested",
        "log_level": "info",
        "approval_id": approval["id"],
        "session_id": sid,
        "message_id": asked["reply_id"],
        "tool": "ls",
        "timeout_s": 0.5,
    }
    assert only(captured, "approval_decided") == {
        "event": "approval_decided",
        "log_level": "info",
        "approval_id": approval["id"],
        "session_id": sid,
        "tool": "ls",
        "decision": "denied",
        "remember": False,
    }
    captured.clear()
    await send(client, sid, "/tool rm")
    unanswered = await pending_approval(client, sid)
    await wait_for(lambda: _idle(client, sid))  # expires after 0.5 s: the reply goes on
    assert only(captured, "approval_expired") == {
        "event": "approval_expired",
        "log_level": "warning",
        "approval_id": unanswered["id"],
        "session_id": sid,
        "tool": "rm",
        "reason": "timeout",
        "timeout_s": 0.5,
    }
    captured.clear()
    await send(client, sid, "/tool cp")
    stopped = await pending_approval(client, sid)
    assert (await client.post(f"/api/v1/sessions/{sid}/cancel")).status == 202
    await wait_for(lambda: _idle(client, sid))
    expired = only(captured, "approval_expired")
    assert (expired["approval_id"], expired["reason"]) == (stopped["id"], "reply_stopped")
    assert only(captured, "reply_cancelled")["session_id"] == sid


async def _idle(client: Client, session_id: str) -> bool:
    return await session_status(client, session_id) == "idle"


async def test_a_reply_stopped_by_shutdown_is_logged_interrupted(
    client: Client, captured: Captured
) -> None:
    sid = (await create_session(client, agent="slow"))["id"]
    sent = await send(client, sid, "a b c d e f")
    await wait_for(lambda: _running(client, sid))
    await client.app[COMMAND_SERVICE].stop(0.0)
    interrupted = only(captured, "reply_interrupted")
    assert interrupted["log_level"] == "warning"
    assert interrupted["duration_s"] >= 0
    assert (interrupted["agent"], interrupted["session_id"], interrupted["message_id"]) == (
        "slow",
        sid,
        sent["reply_id"],
    )
    assert only(captured, "replies_interrupted") == {
        "event": "replies_interrupted",
        "log_level": "warning",
        "count": 1,
    }


async def _running(client: Client, session_id: str) -> bool:
    return await session_status(client, session_id) == "running"


async def failed(
    client: Client, agent: str, captured: Captured
) -> tuple[Any, MutableMapping[str, Any]]:
    """Ask ``agent`` once; its failed reply and the ``agent_failed`` line about it."""
    sid = (await create_session(client, agent=agent))["id"]
    reply = await send(client, sid, "hello", wait=True)
    assert reply["status"] == "failed"
    line = only(captured, "agent_failed")
    assert (line["agent"], line["session_id"], line["message_id"]) == (agent, sid, reply["id"])
    assert (line["code"], line["error"]) == (reply["error"]["code"], reply["error"]["message"])
    captured.clear()
    return reply, line


async def test_agent_failures_name_the_agent_the_session_and_the_message(
    client: Client, captured: Captured
) -> None:
    _, spawn = await failed(client, "missing", captured)
    assert spawn["log_level"] == "error"  # the configuration is wrong: an operator must act
    assert spawn["code"] == "spawn_failed"
    assert (spawn["program"], spawn["os_error"]) == (
        "/nonexistent/agent-program",
        "No such file or directory",
    )
    _, exit_status = await failed(client, "fail", captured)
    assert exit_status["log_level"] == "warning"
    assert (exit_status["exit_status"], exit_status["stderr_tail"]) == (3, "bad input")
    _, timeout = await failed(client, "sleepy", captured)
    assert (timeout["log_level"], timeout["code"], timeout["timeout_s"]) == (
        "warning",
        "timeout",
        0.3,
    )


async def test_no_line_for_a_reply_that_went_well(client: Client, captured: Captured) -> None:
    sid = (await create_session(client))["id"]
    await send(client, sid, "fine", wait=True)
    await asyncio.sleep(0)
    told = [line["event"] for line in captured if line["log_level"] != "debug"]
    assert [event for event in told if event != "request"] == ["session_created"]
    finished = only(captured, "reply_finished")
    assert (finished["log_level"], finished["status"], finished["agent"]) == (
        "debug",
        "complete",
        "echo",
    )

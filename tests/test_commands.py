"""The command pipeline without a server: ordering, durability before acceptance, cancel,
approvals, end and delete, and what survives a stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from aiosvc.agents import AgentRegistry
from aiosvc.agents.base import Agent, Turn
from aiosvc.agents.echo import EchoAgent
from aiosvc.bus import ALL, Bus
from aiosvc.cache import Cache
from aiosvc.commands.service import CommandService
from aiosvc.commands.types import (
    CancelReplies,
    CreateSession,
    DeleteSession,
    EndSession,
    ResolveApproval,
    SendMessage,
    UpdateSession,
)
from aiosvc.config import (
    ApprovalsConfig,
    Config,
    EventsConfig,
    LimitsConfig,
    ServerConfig,
    StorageConfig,
)
from aiosvc.core import Core as TheCore
from aiosvc.core import build_core
from aiosvc.errors import Conflict, NotFound, SessionEnded, Unprocessable, ValidationFailed
from aiosvc.models import (
    ApprovalStatus,
    CommandStatus,
    Event,
    MessageStatus,
    Role,
    Session,
    SessionStatus,
)
from aiosvc.store import Database, Store


class GatedAgent(Agent):
    """Streams one delta, then waits until the test opens its gate; records what it saw."""

    kind = "gated"

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = asyncio.Event()
        self.prompts: list[str] = []
        self.histories: list[list[str]] = []
        self.closed = 0

    async def reply(self, turn: Turn) -> AsyncGenerator[str, None]:
        self.prompts.append(turn.prompt)
        self.histories.append([m.content for m in await turn.history()])
        try:
            yield f"<{turn.prompt}>"
            await self.gate.wait()
            yield "."
        finally:
            self.closed += 1


@attrs.define
class Core:
    core: TheCore
    database: Database
    store: Store
    bus: Bus
    cache: Cache
    service: CommandService
    events: list[Event]
    gated: GatedAgent

    def types(self) -> list[str]:
        return [e.type for e in self.events if e.type != "message.delta"]


async def open_core(path: Path, gated: GatedAgent | None = None) -> Core:
    config = Config(
        server=ServerConfig(computer="here"),
        storage=StorageConfig(db=path),
        limits=LimitsConfig(max_content_chars=100, max_title_chars=10),
        events=EventsConfig(buffer_size=1000),
        approvals=ApprovalsConfig(timeout_s=5),
    )
    gated = gated or GatedAgent()
    agents = AgentRegistry({"echo": EchoAgent("echo"), "gated": gated}, default="echo")
    core = build_core(config, agents=agents)  # as the daemon builds it
    events: list[Event] = []
    core.bus.subscribe(lambda e, t: events.append(e), [ALL], interested=False)  # (a recorder)
    await core.open()
    await core.start()
    return Core(core, core.database, core.store, core.bus, core.cache, core.commands, events, gated)


async def close_core(core: Core, grace: float = 0) -> None:
    await core.core.close(grace)


@pytest.fixture
async def core(db_path: Path) -> AsyncIterator[Core]:
    opened = await open_core(db_path)
    yield opened
    opened.gated.gate.set()
    await close_core(opened, grace=5)


async def new_session(core: Core, agent: str = "echo") -> Session:
    session: Session = await core.service.execute(CreateSession(agent=agent))
    return session


async def test_send_stores_the_message_before_answering(core: Core) -> None:
    session = await new_session(core)
    accepted = await core.service.execute(SendMessage(session_id=session.id, content="hello"))
    # Durable at once: a second connection sees the user message and the journal entry.
    stored = await core.store.messages(session.id)
    assert [m.id for m in stored if m.role is Role.USER] == [accepted.message.id]
    command = await core.store.command(accepted.command_id)
    assert command is not None and command.type == "send_message"
    reply = await accepted.reply
    assert (reply.id, reply.content, reply.status) == (
        accepted.reply_id,
        "hello",
        MessageStatus.COMPLETE,
    )
    finished = await core.cache.command(accepted.command_id)
    assert finished is not None and finished.status is CommandStatus.SUCCEEDED
    assert finished.result == {"message_id": accepted.reply_id, "status": "complete"}
    assert core.types() == [
        "session.created",
        "message.created",
        "session.updated",
        "message.started",
        "status",
        "session.updated",
        "message.completed",
        "status",
        "session.updated",
    ]
    final = core.cache.session(session.id)
    assert final is not None
    assert (final.status, final.message_count) == (SessionStatus.IDLE, 2)


async def test_replies_in_one_session_run_in_order_and_sessions_run_concurrently(
    core: Core,
) -> None:
    first = await new_session(core, "gated")
    second = await new_session(core, "gated")
    a1 = await core.service.execute(SendMessage(session_id=first.id, content="a1"))
    a2 = await core.service.execute(SendMessage(session_id=first.id, content="a2"))
    b1 = await core.service.execute(SendMessage(session_id=second.id, content="b1"))
    for _ in range(50):
        await asyncio.sleep(0.01)
        if len(core.gated.prompts) == 2:
            break
    # a2 waits behind a1; b1 runs beside a1.
    assert sorted(core.gated.prompts) == ["a1", "b1"]
    core.gated.gate.set()
    replies = [await a.reply for a in (a1, a2, b1)]
    assert [r.content for r in replies] == ["<a1>.", "<a2>.", "<b1>."]
    assert core.gated.prompts.index("a2") > core.gated.prompts.index("a1")
    # a2's agent saw a1 and its reply as history.
    assert core.gated.histories[core.gated.prompts.index("a2")] == ["a1", "<a1>."]


async def test_cancel_stops_the_running_reply_and_the_queued_ones(core: Core) -> None:
    session = await new_session(core, "gated")
    running = await core.service.execute(SendMessage(session_id=session.id, content="one"))
    queued = await core.service.execute(SendMessage(session_id=session.id, content="two"))
    while not core.gated.prompts:
        await asyncio.sleep(0.01)
    result = await core.service.execute(CancelReplies(session_id=session.id))
    assert set(result.cancelled) == {running.reply_id, queued.reply_id}
    stopped, never = await running.reply, await queued.reply
    assert (stopped.status, stopped.content, stopped.error and stopped.error.code) == (
        MessageStatus.CANCELLED,
        "<one>",
        "cancelled",
    )
    assert (never.status, never.content) == (MessageStatus.CANCELLED, "")
    assert core.gated.prompts == ["one"]  # the queued one never started
    assert core.gated.closed == 1  # the agent's stream was closed
    history = await core.cache.history(session.id)
    # Replies join the history when they start (or end unstarted): order by creation.
    assert {m.id: (m.content, m.status) for m in history} == {
        running.message.id: ("one", MessageStatus.COMPLETE),
        queued.message.id: ("two", MessageStatus.COMPLETE),
        running.reply_id: ("<one>", MessageStatus.CANCELLED),
        queued.reply_id: ("", MessageStatus.CANCELLED),
    }
    assert [m.created_at for m in history] == sorted(m.created_at for m in history)
    assert await core.store.messages(session.id) == history
    assert core.cache.session(session.id).status is SessionStatus.IDLE  # type: ignore[union-attr]
    for accepted in (running, queued):
        command = await core.store.command(accepted.command_id)
        assert command is not None and command.status is CommandStatus.FAILED


async def test_approval_approved_denied_and_resolved_once(core: Core) -> None:
    session = await new_session(core)
    accepted = await core.service.execute(
        SendMessage(session_id=session.id, content='/tool shell {"cmd": "ls"}')
    )
    while not core.cache.approvals(status="pending"):
        await asyncio.sleep(0.01)
    [approval] = core.cache.approvals(status="pending")
    assert (approval.tool, approval.input, approval.message_id) == (
        "shell",
        {"cmd": "ls"},
        accepted.reply_id,
    )
    waiting = core.cache.session(session.id)
    assert waiting is not None and waiting.status is SessionStatus.WAITING_APPROVAL
    results = await asyncio.gather(
        core.service.execute(ResolveApproval(approval_id=approval.id, decision="approve")),
        core.service.execute(ResolveApproval(approval_id=approval.id, decision="deny")),
        return_exceptions=True,
    )
    assert isinstance(results[1], Conflict) and results[1].code == "already_resolved"
    reply = await accepted.reply
    assert reply.content == "tool shell approved"
    tool_use = next(e for e in core.events if e.type == "tool.use")
    assert tool_use.data() == {
        "message_id": accepted.reply_id,
        "tool": "shell",
        "input": {"cmd": "ls"},
    }
    denied = await core.service.execute(SendMessage(session_id=session.id, content="/tool rm"))
    while not core.cache.approvals(status="pending"):
        await asyncio.sleep(0.01)
    [second] = core.cache.approvals(status="pending")
    await core.service.execute(ResolveApproval(approval_id=second.id, decision="deny"))
    assert (await denied.reply).content == "tool rm denied"
    with pytest.raises(NotFound):
        await core.service.execute(ResolveApproval(approval_id="apr_nope", decision="deny"))


async def test_unanswered_approval_expires_and_the_reply_says_so(db_path: Path) -> None:
    core = await open_core(db_path)
    core.service.approval_timeout_s = 0.05
    try:
        session = await new_session(core)
        accepted = await core.service.execute(
            SendMessage(session_id=session.id, content="/tool slow {}")
        )
        reply = await accepted.reply
        assert reply.content == "tool slow expired"
        assert [a.status for a in core.cache.approvals()] == [ApprovalStatus.EXPIRED]
    finally:
        await close_core(core)


async def test_end_cancels_work_and_refuses_more(core: Core) -> None:
    session = await new_session(core, "gated")
    running = await core.service.execute(SendMessage(session_id=session.id, content="x"))
    while not core.gated.prompts:
        await asyncio.sleep(0.01)
    ended = await core.service.execute(EndSession(session_id=session.id))
    assert ended.status is SessionStatus.ENDED
    assert (await running.reply).status is MessageStatus.CANCELLED
    after = core.cache.session(session.id)
    assert after is not None and after.status is SessionStatus.ENDED  # not set back to idle
    with pytest.raises(SessionEnded):
        await core.service.execute(SendMessage(session_id=session.id, content="more"))
    again = await core.service.execute(EndSession(session_id=session.id))
    assert again == after


async def test_delete_removes_everything_even_while_running(core: Core) -> None:
    session = await new_session(core, "gated")
    running = await core.service.execute(SendMessage(session_id=session.id, content="x"))
    while not core.gated.prompts:
        await asyncio.sleep(0.01)
    await core.service.execute(DeleteSession(session_id=session.id))
    assert (await running.reply).status is MessageStatus.CANCELLED
    assert core.cache.session(session.id) is None
    assert await core.store.sessions() == []
    assert await core.store.messages(session.id) == []
    with pytest.raises(NotFound):
        await core.service.execute(UpdateSession(session_id=session.id, title="x"))
    assert core.events[-1].type in {"session.deleted"}


async def test_validation_and_unknown_agent(core: Core) -> None:
    with pytest.raises(Unprocessable) as unknown:
        await core.service.execute(CreateSession(agent="nope"))
    assert unknown.value.code == "unknown_agent"
    with pytest.raises(ValidationFailed) as long_title:
        await core.service.execute(CreateSession(title="x" * 11))
    assert long_title.value.fields == {"title": "must be at most 10 characters"}
    session = await new_session(core)
    for content in ("", "y" * 101):
        with pytest.raises(ValidationFailed) as bad:
            await core.service.execute(SendMessage(session_id=session.id, content=content))
        assert bad.value.fields == {"content": "must be 1 to 100 characters"}
    with pytest.raises(NotFound):
        await core.service.execute(SendMessage(session_id="../etc/passwd", content="x"))
    assert await core.store.messages(session.id) == []


async def test_stop_interrupts_running_replies_and_keeps_queued_for_the_next_start(
    db_path: Path,
) -> None:
    core = await open_core(db_path)
    session = await new_session(core, "gated")
    running = await core.service.execute(SendMessage(session_id=session.id, content="one"))
    queued = await core.service.execute(SendMessage(session_id=session.id, content="two"))
    while not core.gated.prompts:
        await asyncio.sleep(0.01)
    await close_core(core, grace=0.05)
    stopped = await running.reply
    assert stopped.status is MessageStatus.FAILED
    assert stopped.error is not None and stopped.error.code == "interrupted"
    assert not queued.reply.done()

    again = await open_core(db_path)
    try:
        again.gated.gate.set()
        for _ in range(500):
            command = await again.cache.command(queued.command_id)
            if command is not None and command.status is CommandStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
        history = await again.cache.history(session.id)
        assert {m.id: (m.content, m.status) for m in history} == {
            running.message.id: ("one", MessageStatus.COMPLETE),
            queued.message.id: ("two", MessageStatus.COMPLETE),
            running.reply_id: ("<one>", MessageStatus.FAILED),
            queued.reply_id: ("<two>.", MessageStatus.COMPLETE),
        }
        # The resumed reply's agent saw the finished conversation before its prompt.
        assert (again.gated.prompts, again.gated.histories) == (["two"], [["one"]])
    finally:
        await close_core(again)


async def test_history_read_while_writes_land_is_consistent(core: Core) -> None:
    session = await new_session(core)
    sends: list[Any] = []
    for n in range(20):
        sends.append(
            await core.service.execute(SendMessage(session_id=session.id, content=f"m{n}"))
        )
        if n == 10:
            core.cache.histories.clear()  # read from the store in the middle of the stream
            await core.cache.history(session.id)
    for accepted in sends:
        await accepted.reply
    history = await core.cache.history(session.id)
    assert history == await core.store.messages(session.id)
    assert len(history) == 40

"""Handlers for messages and replies: send, run the agent, finish, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import attrs
import structlog

from aiosvc.agents import Agent, AgentError, Turn
from aiosvc.agents.output import clean_text
from aiosvc.bus import session_topic
from aiosvc.clock import utcnow
from aiosvc.commands import durable, endings
from aiosvc.commands.approvals import ReplyApprovals
from aiosvc.commands.context import Context
from aiosvc.commands.jobs import Job
from aiosvc.commands.types import Accepted, Cancelled, CancelReplies, SendMessage
from aiosvc.errors import SessionEnded, ValidationFailed
from aiosvc.events import EventType
from aiosvc.models import (
    Command,
    CommandStatus,
    ErrorInfo,
    Message,
    MessageStatus,
    Role,
    SessionStatus,
    new_id,
)
from aiosvc.rules import length_error
from aiosvc.store import INTERRUPTED, StoreError
from aiosvc.store.tables import COMMANDS, MESSAGES, SESSIONS

log = structlog.get_logger(__name__)

#: Agent failures the operator must fix (configuration, a dependency down): logged as errors;
#: any other (a program's exit status, a timeout) as warnings.
OPERATOR_ERRORS = frozenset({"spawn_failed", "unknown_agent", "upstream_unreachable"})


def check_content(context: Context, content: str) -> None:
    """Refuse empty content, or content over the configured length."""
    limit = context.limits.max_content_chars
    if not 1 <= len(content) <= limit:
        raise ValidationFailed({"content": length_error(1, limit)})


async def send(context: Context, command: SendMessage) -> Accepted:
    """Store the user message and journal its reply durably, then queue the reply."""
    context.cache.require_session(command.session_id)
    check_content(context, command.content)
    async with context.lock(command.session_id):
        session = context.cache.require_session(command.session_id)
        if session.status is SessionStatus.ENDED:
            raise SessionEnded(f"session {session.id!r} has ended and takes no more messages")
        now = utcnow()
        message = Message(
            id=new_id("msg"),
            session_id=session.id,
            role=Role.USER,
            content=command.content,
            status=MessageStatus.COMPLETE,
            created_at=now,
            completed_at=now,
        )
        journal = Command(
            id=new_id("cmd"),
            type="send_message",
            status=CommandStatus.QUEUED,
            session_id=session.id,
            created_at=now,
        )
        reply_id = new_id("msg")
        session = attrs.evolve(
            session, message_count=session.message_count + 1, last_message_at=now, updated_at=now
        )
        payload = {"message_id": message.id, "reply_id": reply_id}
        await context.store.write(
            [
                MESSAGES.save(message),
                COMMANDS.save(journal, payload=payload),
                SESSIONS.save(session),
            ]
        )
        context.command_changed(journal)
        context.publish_message(EventType.MESSAGE_CREATED, message)
        context.publish_session(EventType.SESSION_UPDATED, session)
        job = Job(
            journal,
            message.id,
            reply_id,
            asyncio.get_running_loop().create_future(),
            prompt=command.content,
        )
        context.lanes.enqueue(job)
    return Accepted(message=message, reply_id=reply_id, command_id=journal.id, reply=job.done)


async def run(context: Context, job: Job) -> None:
    """Produce one reply: mark it started, stream the agent, then record how it ended."""
    started: list[Message] = []
    failure = await durable.retrying(context, lambda: _start(context, job, started))
    if failure is not None and context.stopping.is_set():
        return  # it stays journaled, and runs at the next start
    if failure is not None:  # it cannot start: it fails, and says why
        never = endings.never_started(job, utcnow())
        await endings.finish(context, job, never, "", *endings.unstored(failure), started=False)
        return
    if not started:
        return
    reply = started[0]
    began = time.monotonic()
    session = context.cache.session(job.session_id)
    agent_name = session.agent if session is not None else "unknown"
    about = {"agent": agent_name, "session_id": job.session_id, "message_id": job.reply_id}
    chunks: list[str] = []
    status, error = MessageStatus.COMPLETE, None
    agent: Agent | None = None
    try:
        turn = await _turn(context, job)
        # Held until the reply ends: a reload that removes or changes the agent meanwhile
        # lets this reply finish with it; the session's next reply uses the new one.
        agent = context.agents.acquire(turn.session.agent)
        if agent is None:
            raise AgentError(
                "unknown_agent",
                f"the session's agent {turn.session.agent!r} is no longer configured",
            )
        job.task = asyncio.get_running_loop().create_task(_stream(context, agent, turn, chunks))
        if job.stop_reason is not None:  # stopped while the history loaded
            job.task.cancel()
        await job.task
    except asyncio.CancelledError:
        if job.stop_reason is None:
            raise  # the lane itself is being cancelled
        status = MessageStatus.CANCELLED if job.stop_reason == "cancelled" else MessageStatus.FAILED
        error = endings.CANCELLED if job.stop_reason == "cancelled" else INTERRUPTED
    except AgentError as exc:
        status = MessageStatus.FAILED
        error = ErrorInfo(code=clean_text(exc.code), message=clean_text(exc.message))
        level = logging.ERROR if exc.code in OPERATOR_ERRORS else logging.WARNING
        facts = {**exc.details, **about, "code": error.code, "error": error.message}  # ours win
        log.log(level, "agent_failed", **facts)
    except StoreError as exc:  # one of its own writes (an approval, say) could not be made
        status, error = endings.unstored(exc)
    except Exception as exc:
        log.exception("agent_failed", **about, code="agent_error")
        status = MessageStatus.FAILED
        error = ErrorInfo(code="agent_error", message=clean_text(str(exc) or type(exc).__name__))
    finally:
        job.task = None
        if agent is not None:
            await context.agents.release(agent)
    await endings.finish(context, job, reply, "".join(chunks), status, error)
    seconds = time.monotonic() - began
    context.metrics.reply_finished(agent_name, status.value, seconds)
    if error is endings.CANCELLED:
        log.info("reply_cancelled", **about, duration_s=round(seconds, 3))
    elif error is INTERRUPTED:
        log.warning("reply_interrupted", **about, duration_s=round(seconds, 3))
    else:
        log.debug("reply_finished", **about, status=status.value, duration_s=round(seconds, 3))


async def _start(context: Context, job: Job, started: list[Message]) -> None:
    """Record that the reply started (into ``started``), unless it was stopped first: then
    a cancelled one is recorded as never started, an interrupted one stays queued."""
    async with context.lock(job.session_id):
        session = context.cache.session(job.session_id)
        if session is None:  # deleted: its rows are gone with it
            endings.settle(job, endings.never_started(job, utcnow()))
            return
        if job.stop_reason == "cancelled":
            await endings.record_cancelled(context, session, [job])
            return
        if job.stop_reason is not None:
            return  # stopping: it stays journaled for the next start
        now = utcnow()
        reply = Message(
            id=job.reply_id,
            session_id=session.id,
            role=Role.ASSISTANT,
            content="",
            status=MessageStatus.STREAMING,
            created_at=now,
        )
        command = attrs.evolve(job.command, status=CommandStatus.RUNNING)
        session = attrs.evolve(
            session,
            status=SessionStatus.RUNNING,
            message_count=session.message_count + 1,
            last_message_at=now,
            updated_at=now,
        )
        await context.store.write(
            [MESSAGES.save(reply), COMMANDS.save(command), SESSIONS.save(session)]
        )
        job.command = command
        context.command_changed(job.command)
        context.publish_message(EventType.MESSAGE_STARTED, reply)
        context.publish_status(session)
        context.publish_session(EventType.SESSION_UPDATED, session)
    started.append(reply)


async def _turn(context: Context, job: Job) -> Turn:
    session = context.cache.session(job.session_id)
    prompt = job.prompt
    if prompt is None:  # resumed after a restart: read it back
        found = await context.store.message(job.message_id)
        prompt = found.content if found is not None else None
    if session is None or prompt is None:
        raise AgentError("session_deleted", "the session was deleted")

    async def history() -> list[Message]:
        # Read a page at a time, with awaits between: a long history never holds the loop.
        return conversation(await context.cache.history(job.session_id), job.message_id)

    return Turn(
        session=session,
        prompt=prompt,
        reply_id=job.reply_id,
        approvals=ReplyApprovals(context, job),
        load_history=history,
    )


def conversation(history: list[Message], prompt_id: str) -> list[Message]:
    """The agent's view of a history: the finished messages, without the prompt and without
    user messages sent after it (they are queued behind this reply)."""
    earlier: list[Message] = []
    seen_prompt = False
    for message in history:
        if message.id == prompt_id:
            seen_prompt = True
        elif message.status is MessageStatus.COMPLETE and not (
            seen_prompt and message.role is Role.USER
        ):
            earlier.append(message)
    return earlier


async def _stream(context: Context, agent: Agent, turn: Turn, chunks: list[str]) -> None:
    """Publish the agent's deltas and keep them; a reply past the size limit is cut there."""
    topics = (session_topic(turn.session.id),)
    room = context.limits.max_reply_chars
    async with contextlib.aclosing(agent.reply(turn)) as deltas:
        async for raw in deltas:
            if not raw:
                continue
            delta = clean_text(raw)
            over = len(delta) > room
            if over:
                delta = delta[:room]
            room -= len(delta)
            if delta:
                chunks.append(delta)
                context.bus.publish(
                    EventType.MESSAGE_DELTA, topics, {"message_id": turn.reply_id, "delta": delta}
                )
            if over:
                limit = context.limits.max_reply_chars
                raise AgentError("reply_too_large", f"the reply passed {limit} characters")


async def cancel(context: Context, command: CancelReplies) -> Cancelled:
    """Stop the running reply and cancel the queued ones; say which replies that touched."""
    async with context.lock(command.session_id):
        session = context.cache.require_session(command.session_id)
        stopped = await cancel_jobs(context, session.id)
    return Cancelled(session_id=command.session_id, cancelled=tuple(stopped))


async def cancel_jobs(context: Context, session_id: str, *, ending: bool = False) -> list[str]:
    """Cancel a session's queued replies (recorded as cancelled messages) and stop its running
    one; with ``ending``, the session is recorded ended in the same write. The caller holds
    the session's lock. Return the replies' ids. If the write fails, nothing changed."""
    session = context.cache.require_session(session_id)
    queued = context.lanes.take_queued(session_id)  # so none starts while they are recorded
    try:
        if queued or ending:
            await endings.record_cancelled(context, session, queued, ending=ending)
    except BaseException:
        for job in queued:  # nothing was recorded: they wait again, in order
            context.lanes.enqueue(job)
        raise
    stopped = [job.reply_id for job in queued]
    for job in context.lanes.running(session_id):
        stopped.append(job.reply_id)
        job.stop("cancelled")
    return stopped


def drop_jobs(context: Context, session_id: str) -> None:
    """Forget a deleted session's queued replies and stop its running one (nothing recorded:
    the rows go with the session)."""
    now = utcnow()
    for job in context.lanes.take_queued(session_id):
        if not job.done.done():  # a waiting client gets the reply as it ended: never started
            job.done.set_result(endings.never_started(job, now))
    for job in context.lanes.running(session_id):
        job.stop("cancelled")

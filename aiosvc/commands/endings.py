"""How a reply ends: recorded in the database, then told to memory and to whoever waits.

A reply's end is written before it is published, like every change; when the write cannot be
made (:mod:`aiosvc.commands.durable`), the reply still ends, failed, and memory never keeps it
running while the database cannot finish it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import structlog

from aiosvc.clock import utcnow
from aiosvc.commands import durable
from aiosvc.commands.context import Context
from aiosvc.commands.jobs import Job
from aiosvc.events import EventType
from aiosvc.models import (
    Command,
    CommandStatus,
    ErrorInfo,
    Message,
    MessageStatus,
    Role,
    Session,
    SessionStatus,
)
from aiosvc.store import StoreError
from aiosvc.store.db import Statement
from aiosvc.store.tables import COMMANDS, MESSAGES, SESSIONS

log = structlog.get_logger(__name__)

CANCELLED = ErrorInfo(code="cancelled", message="the reply was cancelled")
FINAL_EVENT = {
    MessageStatus.COMPLETE: EventType.MESSAGE_COMPLETED,
    MessageStatus.FAILED: EventType.MESSAGE_FAILED,
    MessageStatus.CANCELLED: EventType.MESSAGE_CANCELLED,
}


def unstored(exc: StoreError) -> tuple[MessageStatus, ErrorInfo]:
    """How a reply ends when its own write could not be made."""
    return MessageStatus.FAILED, durable.not_stored(exc)


async def finish(
    context: Context,
    job: Job,
    reply: Message,
    content: str,
    status: MessageStatus,
    error: ErrorInfo | None,
    *,
    started: bool = True,
) -> None:
    """Record how the reply ended and tell whoever waits for it.

    The write is retried while the storage fails. If it never lands, the reply is recorded as
    failed without its text (a smaller write); if even that fails, it is shown failed at once
    and recorded as soon as a write lands (or marked interrupted at the next start): memory
    never keeps a reply running that the database cannot finish.
    """
    now = utcnow()
    final = attrs.evolve(reply, content=content, status=status, completed_at=now, error=error)
    new = not started  # its row is written now, and counted in the session now

    def record(final: Message, repair: bool = False) -> Callable[[], Awaitable[None]]:
        """One try at writing ``final`` (a ``repair`` writes what memory already shows)."""
        return lambda: _record_end(context, job, final, new=new and not repair, repair=repair)

    failure = await durable.retrying(context, record(final))
    if failure is not None:
        final = attrs.evolve(final, content="", status=MessageStatus.FAILED)
        final = attrs.evolve(final, error=durable.not_stored(failure))
        failure = await durable.retrying(context, record(final), for_s=0)
    if failure is not None:
        log.error("reply_not_stored", reply_id=job.reply_id, error=str(failure))
        session = context.cache.session(job.session_id)
        if session is not None:
            context.cache.unsaved(final)  # histories show it ended, not its stored start
            _publish_end(context, job, final, _after(context, session, final, new))
        settle(job, final)
        try:
            await durable.retrying(context, record(final, repair=True), for_s=math.inf)
        finally:
            context.cache.saved(final.id)
        return
    settle(job, final)


async def _record_end(
    context: Context, job: Job, final: Message, *, new: bool, repair: bool
) -> None:
    """Write the reply's end; a ``repair`` writes what memory already shows."""
    async with context.lock(job.session_id):
        session = context.cache.session(job.session_id)
        if session is None:  # deleted while it ran: nothing left to record
            return
        if not repair:
            session = _after(context, session, final, new)
        command = finished(job.command, final)
        await context.store.write(
            [MESSAGES.save(final), COMMANDS.save(command), SESSIONS.save(session)]
        )
        if not repair:
            _publish_end(context, job, final, session)


def _after(context: Context, session: Session, final: Message, new: bool) -> Session:
    """The session once a reply ended: running while more are queued, else idle; a reply
    that never started is counted now."""
    now = final.completed_at
    changes: dict[str, Any] = {"updated_at": now}
    if new:
        changes.update(message_count=session.message_count + 1, last_message_at=now)
    if session.status is not SessionStatus.ENDED:
        busy = context.lanes.has_more(session.id)
        changes["status"] = SessionStatus.RUNNING if busy else SessionStatus.IDLE
    return attrs.evolve(session, **changes)


def _publish_end(context: Context, job: Job, final: Message, session: Session) -> None:
    job.command = finished(job.command, final)
    context.command_changed(job.command)
    context.publish_message(FINAL_EVENT[final.status], final)
    context.publish_status(session)
    context.publish_session(EventType.SESSION_UPDATED, session)


def settle(job: Job, reply: Message) -> None:
    """Tell whoever waits for the reply how it ended (once)."""
    if not job.done.done():
        job.done.set_result(reply)


def finished(command: Command, reply: Message) -> Command:
    """The reply's command once the reply ended."""
    ok = reply.status is MessageStatus.COMPLETE
    return attrs.evolve(
        command,
        status=CommandStatus.SUCCEEDED if ok else CommandStatus.FAILED,
        finished_at=reply.completed_at,
        result={"message_id": reply.id, "status": reply.status.value},
        error=reply.error,
    )


async def record_cancelled(
    context: Context, session: Session, jobs: list[Job], *, ending: bool = False
) -> None:
    """Record replies that never started as cancelled (and the session ended, with
    ``ending``), then tell whoever waits for them; the caller holds the session's lock."""
    now = utcnow()
    finals = [never_started(job, now) for job in jobs]
    commands = [finished(job.command, final) for job, final in zip(jobs, finals, strict=True)]
    changes: dict[str, Any] = {"updated_at": now}
    if jobs:
        changes.update(message_count=session.message_count + len(jobs), last_message_at=now)
    if ending:
        changes["status"] = SessionStatus.ENDED
    session = attrs.evolve(session, **changes)
    statements: list[Statement] = [SESSIONS.save(session)]
    for final, command in zip(finals, commands, strict=True):
        statements += [MESSAGES.save(final), COMMANDS.save(command)]
    await context.store.write(statements)
    for job, final, command in zip(jobs, finals, commands, strict=True):
        job.command = command
        context.command_changed(command)
        context.publish_message(EventType.MESSAGE_CANCELLED, final)
        settle(job, final)
        context.metrics.reply_finished(session.agent, MessageStatus.CANCELLED.value, None)
    if jobs:
        log.info(
            "queued_replies_cancelled",
            session_id=session.id,
            count=len(jobs),
            message_ids=[job.reply_id for job in jobs],
        )
    if ending:
        context.publish_session(EventType.SESSION_ENDED, session)
        context.publish_status(session)
    else:
        context.publish_session(EventType.SESSION_UPDATED, session)


def never_started(job: Job, now: str) -> Message:
    """The reply of a job cancelled before it started: empty, cancelled."""
    return Message(
        id=job.reply_id,
        session_id=job.session_id,
        role=Role.ASSISTANT,
        content="",
        status=MessageStatus.CANCELLED,
        created_at=now,
        completed_at=now,
        error=CANCELLED,
    )

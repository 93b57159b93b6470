"""Handlers for the session lifecycle: create, rename, end, delete."""

from __future__ import annotations

import attrs
import structlog

from aiosvc.bus import session_topic
from aiosvc.clock import utcnow
from aiosvc.commands import replies
from aiosvc.commands.context import Context
from aiosvc.commands.types import CreateSession, DeleteSession, EndSession, UpdateSession
from aiosvc.errors import Unprocessable, ValidationFailed
from aiosvc.events import EventType
from aiosvc.models import Session, SessionStatus, new_id
from aiosvc.rules import (
    MAX_MODEL_CHARS,
    MAX_PROJECT_CHARS,
    MAX_SYSTEM_PROMPT_CHARS,
    MIN_PROJECT_CHARS,
    length_error,
)
from aiosvc.store.tables import SESSIONS

log = structlog.get_logger(__name__)


def check_title(context: Context, title: str | None) -> None:
    """Refuse a title over the configured length."""
    limit = context.limits.max_title_chars
    if title is not None and len(title) > limit:
        raise ValidationFailed({"title": length_error(0, limit)})


def check_options(context: Context, agent: str, options: dict[str, str | None]) -> None:
    """Refuse a model or system prompt of the wrong length, or one the agent's kind cannot
    use (``422 unsupported_option``)."""
    model, prompt = options.get("model"), options.get("system_prompt")
    if model is not None and not 1 <= len(model) <= MAX_MODEL_CHARS:
        raise ValidationFailed({"model": length_error(1, MAX_MODEL_CHARS)})
    if prompt is not None and len(prompt) > MAX_SYSTEM_PROMPT_CHARS:
        raise ValidationFailed({"system_prompt": length_error(0, MAX_SYSTEM_PROMPT_CHARS)})
    backend = context.agents.get(agent)
    for name, value in sorted(options.items()):
        if value is not None and (backend is None or name not in backend.options):
            kind = backend.kind if backend is not None else None
            raise Unprocessable(
                f"agent {agent!r} ({kind}) does not take a session {name}",
                code="unsupported_option",
                details={"field": name, "agent": agent, "kind": kind},
            )


async def create(context: Context, command: CreateSession) -> Session:
    """Create a session with the named (or default) agent."""
    check_title(context, command.title)
    project = command.project
    if project is not None and not MIN_PROJECT_CHARS <= len(project) <= MAX_PROJECT_CHARS:
        raise ValidationFailed({"project": length_error(MIN_PROJECT_CHARS, MAX_PROJECT_CHARS)})
    agent = command.agent if command.agent is not None else context.agents.default
    if context.agents.get(agent) is None:
        raise Unprocessable(
            f"unknown agent {agent!r}", code="unknown_agent", details={"field": "agent"}
        )
    options: dict[str, str | None] = {
        "model": command.model,
        "system_prompt": command.system_prompt,
    }
    check_options(context, agent, options)
    now = utcnow()
    session = Session(
        id=new_id("ses"),
        title=command.title or "",
        agent=agent,
        project=command.project,
        computer=context.computer,
        status=SessionStatus.IDLE,
        created_at=now,
        updated_at=now,
        model=command.model,
        system_prompt=command.system_prompt,
    )
    await context.store.write([SESSIONS.save(session)])
    context.publish_session(EventType.SESSION_CREATED, session)
    log.info("session_created", session_id=session.id, agent=agent, project=session.project)
    return session


async def update(context: Context, command: UpdateSession) -> Session:
    """Change a session's title, model or system prompt (those ``given``)."""
    found = context.cache.require_session(command.session_id)
    names = ("title", "model", "system_prompt")
    given = command.given
    if given is None:
        given = frozenset(n for n in names if getattr(command, n) is not None)
    changes: dict[str, str | None] = {n: getattr(command, n) for n in names if n in given}
    if not changes:
        raise ValidationFailed({"$": "give at least one of title, model, system_prompt"})
    if "title" in changes and changes["title"] is None:
        raise ValidationFailed({"title": "expected a string, got null"})
    check_title(context, command.title)
    options = {k: v for k, v in changes.items() if k != "title"}
    check_options(context, found.agent, options)
    async with context.lock(command.session_id):
        session = context.cache.require_session(command.session_id)
        title = command.title if "title" in changes and command.title is not None else None
        session = attrs.evolve(
            session,
            title=session.title if title is None else title,
            model=changes.get("model", session.model),
            system_prompt=changes.get("system_prompt", session.system_prompt),
            updated_at=utcnow(),
        )
        await context.store.write([SESSIONS.save(session)])
        context.publish_session(EventType.SESSION_UPDATED, session)
    return session


async def end(context: Context, command: EndSession) -> Session:
    """End a session: cancel what runs or waits, refuse further messages, keep history.

    Ending an ended session changes nothing and answers it as it is.
    """
    async with context.lock(command.session_id):
        session = context.cache.require_session(command.session_id)
        if session.status is SessionStatus.ENDED:
            return session
        # One write: its queued replies cancelled and the session ended, or nothing changed.
        stopped = await replies.cancel_jobs(context, session.id, ending=True)
        session = context.cache.require_session(command.session_id)
    log.info("session_ended", session_id=session.id, replies_cancelled=len(stopped))
    return session


async def delete(context: Context, command: DeleteSession) -> None:
    """Delete a session with its messages, commands and approvals."""
    async with context.lock(command.session_id):
        session = context.cache.require_session(command.session_id)
        await context.store.write([SESSIONS.delete(session.id)])
        # Only once it is gone for good (a failed write leaves it, and its replies, as they were)
        replies.drop_jobs(context, session.id)
        context.bus.publish(
            EventType.SESSION_DELETED, ("sessions", session_topic(session.id)), {"id": session.id}
        )
    log.info("session_deleted", session_id=session.id, messages=session.message_count)

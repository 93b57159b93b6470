"""External approvals: a program outside the daemon (a coding agent's pre-tool hook) asks a
person about a tool call, and may block until the answer.

The approval lives in the daemon, not in the request that asked: a client that goes away
leaves it pending until a person answers or its timer expires it. Stopping the daemon
expires the pending ones, so requests waiting on them are answered before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib

import attrs
import structlog

from aiosvc.agents.output import clean_text, clean_value
from aiosvc.clock import utcnow
from aiosvc.commands.approvals import settle, topics
from aiosvc.commands.context import Context
from aiosvc.commands.types import RequestApproval
from aiosvc.convert import dumps
from aiosvc.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from aiosvc.events import EventType
from aiosvc.models import Approval, ApprovalStatus, new_id
from aiosvc.rules import MAX_EXTERNAL_TIMEOUT_S, MAX_TOOL_CHARS, length_error
from aiosvc.store.tables import APPROVALS

log = structlog.get_logger(__name__)


def timeout_of(context: Context, asked: float | None) -> float:
    """How long an external approval waits: as asked, else the configured approval timeout,
    never more than :data:`MAX_EXTERNAL_TIMEOUT_S`."""
    if asked is not None:
        if not 0 < asked <= MAX_EXTERNAL_TIMEOUT_S:
            raise ValidationFailed(
                {"timeout_s": f"must be above 0 and at most {MAX_EXTERNAL_TIMEOUT_S}"}
            )
        return asked
    configured = context.approval_timeout_s
    return MAX_EXTERNAL_TIMEOUT_S if configured is None else min(configured, MAX_EXTERNAL_TIMEOUT_S)


async def request(context: Context, command: RequestApproval) -> Approval:
    """Create a pending approval (or an approved one, when its session remembers the tool)."""
    if not 1 <= len(command.tool) <= MAX_TOOL_CHARS:
        raise ValidationFailed({"tool": length_error(1, MAX_TOOL_CHARS)})
    if command.input is None:  # stored and shown as the tool's arguments: a JSON value
        raise ValidationFailed({"input": "expected a JSON value, got null"})
    timeout_s = timeout_of(context, command.timeout_s)
    session_id = None
    if command.session_id is not None:
        session_id = context.cache.require_session(command.session_id).id
    tool = clean_text(command.tool)
    now = utcnow()
    approval = Approval(
        id=new_id("apr"),
        session_id=session_id,
        message_id=None,
        tool=tool,
        input=clean_value(command.input),
        status=ApprovalStatus.PENDING,
        created_at=now,
    )
    # Every event is kept for resuming clients: each must be bounded, like a hook's.
    size = len(dumps(approval))
    if size > context.limits.max_event_bytes:
        raise PayloadTooLarge(
            f"the approval is {size} bytes as JSON, over the limit of "
            f"{context.limits.max_event_bytes} bytes (limits.max_event_bytes)"
        )
    async with context.lock(session_id or approval.id):
        if session_id is not None and await context.store.remembered(session_id, tool):
            approval = attrs.evolve(approval, status=ApprovalStatus.APPROVED, resolved_at=now)
            await context.store.write([APPROVALS.save(approval)])
            context.bus.publish(EventType.APPROVAL_RESOLVED, topics(approval), approval)
            log.info("approval_remembered", session_id=session_id, tool=tool, external=True)
            return approval
        await context.store.write([APPROVALS.save(approval)])
        context.bus.publish(EventType.APPROVAL_REQUESTED, topics(approval), approval)
        timer = asyncio.get_running_loop().create_task(
            _expire_after(context, approval.id, timeout_s), name=f"aiosvc-expiry-{approval.id}"
        )
        context.timers[approval.id] = timer
    log.info(
        "approval_requested",
        approval_id=approval.id,
        session_id=session_id,
        tool=tool,
        timeout_s=timeout_s,
        external=True,
    )
    return approval


async def _expire_after(context: Context, approval_id: str, timeout_s: float) -> None:
    await asyncio.sleep(timeout_s)
    context.timers.pop(approval_id, None)
    try:
        await settle(context, approval_id, ApprovalStatus.EXPIRED, why="timeout")
    except Conflict:  # answered meanwhile
        pass
    except NotFound:  # deleted with its session: wake whoever waits (they find it gone)
        context.decisions.decide(approval_id, ApprovalStatus.EXPIRED)


async def wait(context: Context, approval_id: str) -> Approval:
    """The approval once it is no longer pending (at once if it is not)."""
    approval = context.cache.require_approval(approval_id)
    if approval.status is not ApprovalStatus.PENDING:
        return approval
    watcher = context.decisions.watch(approval_id)  # no await since the check: no race
    try:
        await watcher
    finally:
        context.decisions.unwatch(approval_id, watcher)
    return context.cache.require_approval(approval_id)


async def stop(context: Context) -> None:
    """Expire every pending external approval (the daemon stops): their waiters answer."""
    for approval_id, timer in list(context.timers.items()):
        timer.cancel()
        with contextlib.suppress(Conflict, NotFound):
            await settle(context, approval_id, ApprovalStatus.EXPIRED, why="shutdown")
    context.timers.clear()

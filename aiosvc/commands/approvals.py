"""Tool-use approvals: the gate an agent waits at, and the command that resolves it."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import structlog

from aiosvc.agents.output import clean_text, clean_value
from aiosvc.bus import session_topic
from aiosvc.clock import utcnow
from aiosvc.commands.context import Context
from aiosvc.commands.jobs import Job
from aiosvc.commands.types import ResolveApproval
from aiosvc.errors import Conflict, NotFound, ValidationFailed
from aiosvc.events import EventType
from aiosvc.models import Approval, ApprovalStatus, SessionStatus, new_id
from aiosvc.store import Statement, remember_tool
from aiosvc.store.tables import APPROVALS, SESSIONS

log = structlog.get_logger(__name__)


def topics(approval: Approval) -> tuple[str, ...]:
    """Where an approval's events go: ``approvals``, and its session's topic if it has one."""
    if approval.session_id is None:
        return ("approvals",)
    return ("approvals", session_topic(approval.session_id))


class ReplyApprovals:
    """Puts one reply's tool calls to a person and waits for the answer."""

    def __init__(self, context: Context, job: Job) -> None:
        self._context = context
        self._job = job

    async def request(self, tool: str, input: Any, *, announced: bool = False) -> ApprovalStatus:
        """Ask for approval; the session waits until it is approved, denied or expires, which
        is returned (``announced``: the agent published the call's ``tool.use`` itself)."""
        context, job = self._context, self._job
        if await self._remembered(clean_text(tool), input, announced=announced):
            return ApprovalStatus.APPROVED
        approval = Approval(
            id=new_id("apr"),
            session_id=job.session_id,
            message_id=job.reply_id,
            tool=clean_text(tool),  # the agent's words: see aiosvc.agents.output
            input=clean_value(input),
            status=ApprovalStatus.PENDING,
            created_at=utcnow(),
        )
        waiter = context.decisions.expect(approval.id)
        try:
            await self._set_waiting(approval, announced=announced)
            job.waiting_for = approval.id
            if context.stopping.is_set():  # nobody can decide any more: stop it now (and
                job.stop("interrupted")  # service.stop stops those already waiting)
            try:
                async with asyncio.timeout(context.approval_timeout_s):
                    outcome = await waiter
            except TimeoutError:
                outcome = await self._expire(approval.id, "timeout")
            except asyncio.CancelledError:
                await asyncio.shield(self._expire(approval.id, "reply_stopped"))
                raise
        finally:
            job.waiting_for = None
            context.decisions.forget(approval.id)
        await self._set_running()
        return outcome

    async def _remembered(self, tool: str, input: Any, *, announced: bool) -> bool:
        """Run ``tool`` without asking when a person approved it for the rest of the session;
        its use is published all the same."""
        context, job = self._context, self._job
        if not await context.store.remembered(job.session_id, tool):
            return False
        if not announced:
            data = {"message_id": job.reply_id, "tool": tool, "input": clean_value(input)}
            context.bus.publish(EventType.TOOL_USE, (session_topic(job.session_id),), data)
        log.info("approval_remembered", session_id=job.session_id, tool=tool)
        return True

    async def _expire(self, approval_id: str, why: str) -> ApprovalStatus:
        """Expire an unanswered approval; a decision that won the race still counts."""
        try:
            await settle(self._context, approval_id, ApprovalStatus.EXPIRED, why=why)
        except (Conflict, NotFound):
            current = self._context.cache.approval(approval_id)
            return current.status if current is not None else ApprovalStatus.EXPIRED
        return ApprovalStatus.EXPIRED

    async def _set_waiting(self, approval: Approval, *, announced: bool = False) -> None:
        context = self._context
        async with context.lock(self._job.session_id):
            session = context.cache.require_session(self._job.session_id)
            session = attrs.evolve(
                session, status=SessionStatus.WAITING_APPROVAL, updated_at=utcnow()
            )
            await context.store.write([APPROVALS.save(approval), SESSIONS.save(session)])
            if not announced:
                context.bus.publish(
                    EventType.TOOL_USE,
                    (session_topic(session.id),),
                    {
                        "message_id": approval.message_id,
                        "tool": approval.tool,
                        "input": approval.input,
                    },
                )
            context.bus.publish(EventType.APPROVAL_REQUESTED, topics(approval), approval)
            context.publish_status(session, detail=f"waiting for approval of {approval.tool}")
            context.publish_session(EventType.SESSION_UPDATED, session)
        log.info(
            "approval_requested",
            approval_id=approval.id,
            session_id=approval.session_id,
            message_id=approval.message_id,
            tool=approval.tool,
            timeout_s=context.approval_timeout_s,
        )

    async def _set_running(self) -> None:
        context = self._context
        async with context.lock(self._job.session_id):
            session = context.cache.session(self._job.session_id)
            if session is None or session.status is not SessionStatus.WAITING_APPROVAL:
                return
            session = attrs.evolve(session, status=SessionStatus.RUNNING, updated_at=utcnow())
            await context.store.write([SESSIONS.save(session)])
            context.publish_status(session)
            context.publish_session(EventType.SESSION_UPDATED, session)


async def settle(
    context: Context,
    approval_id: str,
    status: ApprovalStatus,
    *,
    why: str = "decided",
    remember: bool = False,
) -> Approval:
    """Record a pending approval's outcome exactly once; a second attempt is a conflict.

    ``why`` an approval expires: ``timeout``, ``reply_stopped`` (cancelled, or shutdown) or
    ``shutdown`` (an external one). ``remember``: approve its tool for the rest of its session,
    in the same write.
    """
    found = context.cache.require_approval(approval_id)
    async with context.lock(found.session_id or approval_id):
        current = context.cache.require_approval(approval_id)
        if current.status is not ApprovalStatus.PENDING:
            raise Conflict(
                f"approval {approval_id!r} is already {current.status.value}",
                code="already_resolved",
                details={"status": current.status.value},
            )
        resolved = attrs.evolve(current, status=status, resolved_at=utcnow())
        writes: list[Statement] = [APPROVALS.save(resolved)]
        if remember and resolved.session_id is not None:
            assert resolved.resolved_at is not None
            writes.append(
                remember_tool(resolved.session_id, resolved.tool, resolved.id, resolved.resolved_at)
            )
        await context.store.write(writes)
        context.bus.publish(EventType.APPROVAL_RESOLVED, topics(resolved), resolved)
        context.decisions.decide(approval_id, status)
        timer = context.timers.pop(approval_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()  # an external approval's expiry: no longer due
    about = {"approval_id": approval_id, "session_id": resolved.session_id, "tool": resolved.tool}
    if status is ApprovalStatus.EXPIRED:
        log.warning("approval_expired", **about, reason=why, timeout_s=context.approval_timeout_s)
    else:
        log.info("approval_decided", **about, decision=status.value, remember=remember)
    return resolved


async def resolve(context: Context, command: ResolveApproval) -> Approval:
    """Approve or deny a pending approval; ``remember`` approves its tool for the session."""
    approval = context.cache.require_approval(command.approval_id)
    remember = command.remember == "session"
    if remember and command.decision != "approve":
        raise ValidationFailed({"remember": "only an approval can be remembered, not a denial"})
    if remember and approval.session_id is None:
        raise ValidationFailed({"remember": "this approval belongs to no session"})
    status = ApprovalStatus.APPROVED if command.decision == "approve" else ApprovalStatus.DENIED
    return await settle(context, command.approval_id, status, remember=remember)

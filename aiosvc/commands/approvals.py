"""Tool-use approvals: the gate an agent waits at, and the command that resolves it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from aiosvc.agents.output import clean_text, clean_value
from aiosvc.bus import session_topic
from aiosvc.clock import utcnow
from aiosvc.commands.jobs import Job
from aiosvc.commands.types import ResolveApproval
from aiosvc.errors import Conflict, NotFound
from aiosvc.models import Approval, ApprovalStatus, SessionStatus, is_valid_id, new_id
from aiosvc.store.tables import APPROVALS, SESSIONS

if TYPE_CHECKING:
    from aiosvc.commands.service import CommandService

log = structlog.get_logger(__name__)


def _topics(approval: Approval) -> tuple[str, str]:
    return ("approvals", session_topic(approval.session_id))


class Gate:
    """Puts one reply's tool calls to a person and waits for the answer."""

    def __init__(self, service: CommandService, job: Job) -> None:
        self._service = service
        self._job = job

    async def request(self, tool: str, input: Any) -> bool:
        """Ask for approval; the session waits until it is approved, denied or expires."""
        service, job = self._service, self._job
        approval = Approval(
            id=new_id("apr"),
            session_id=job.session_id,
            message_id=job.reply_id,
            tool=clean_text(tool),  # the agent's words: see aiosvc.agents.output
            input=clean_value(input),
            status=ApprovalStatus.PENDING,
            created_at=utcnow(),
        )
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        service.approval_waiters[approval.id] = waiter
        try:
            await self._set_waiting(approval)
            job.waiting_for = approval.id
            if service.stopping.is_set():  # nobody can decide any more: stop it now (and
                job.stop("interrupted")  # service.stop stops those already waiting)
            try:
                async with asyncio.timeout(service.approval_timeout_s):
                    approved = await waiter
            except TimeoutError:
                approved = await self._expire(approval.id, "timeout")
            except asyncio.CancelledError:
                await asyncio.shield(self._expire(approval.id, "reply_stopped"))
                raise
        finally:
            job.waiting_for = None
            service.approval_waiters.pop(approval.id, None)
        await self._set_running()
        return approved

    async def _expire(self, approval_id: str, why: str) -> bool:
        """Expire an unanswered approval; a decision that won the race still counts."""
        try:
            await settle(self._service, approval_id, ApprovalStatus.EXPIRED, why=why)
        except (Conflict, NotFound):
            current = self._service.cache.approval(approval_id)
            return current is not None and current.status is ApprovalStatus.APPROVED
        return False

    async def _set_waiting(self, approval: Approval) -> None:
        service = self._service
        async with service.lock(approval.session_id):
            session = service.session_or_404(approval.session_id)
            session = attrs.evolve(
                session, status=SessionStatus.WAITING_APPROVAL, updated_at=utcnow()
            )
            await service.store.write([APPROVALS.save(approval), SESSIONS.save(session)])
            service.bus.publish(
                "tool.use",
                (session_topic(session.id),),
                {"message_id": approval.message_id, "tool": approval.tool, "input": approval.input},
            )
            service.bus.publish("approval.requested", _topics(approval), approval)
            service.publish_status(session, detail=f"waiting for approval of {approval.tool}")
            service.publish_session("session.updated", session)
        log.info(
            "approval_requested",
            approval_id=approval.id,
            session_id=approval.session_id,
            message_id=approval.message_id,
            tool=approval.tool,
            timeout_s=service.approval_timeout_s,
        )

    async def _set_running(self) -> None:
        service = self._service
        async with service.lock(self._job.session_id):
            session = service.cache.session(self._job.session_id)
            if session is None or session.status is not SessionStatus.WAITING_APPROVAL:
                return
            session = attrs.evolve(session, status=SessionStatus.RUNNING, updated_at=utcnow())
            await service.store.write([SESSIONS.save(session)])
            service.publish_status(session)
            service.publish_session("session.updated", session)


async def settle(
    service: CommandService, approval_id: str, status: ApprovalStatus, *, why: str = "decided"
) -> Approval:
    """Record a pending approval's outcome exactly once; a second attempt is a conflict.

    ``why`` an approval expires: ``timeout`` or ``reply_stopped`` (cancelled, or shutdown).
    """
    found = service.cache.approval(approval_id) if is_valid_id(approval_id) else None
    if found is None:
        raise NotFound.of("approval", approval_id)
    async with service.lock(found.session_id):
        current = service.cache.approval(approval_id)
        if current is None:
            raise NotFound.of("approval", approval_id)
        if current.status is not ApprovalStatus.PENDING:
            raise Conflict(
                f"approval {approval_id!r} is already {current.status.value}",
                code="already_resolved",
                details={"status": current.status.value},
            )
        resolved = attrs.evolve(current, status=status, resolved_at=utcnow())
        await service.store.write([APPROVALS.save(resolved)])
        service.bus.publish("approval.resolved", _topics(resolved), resolved)
        waiter = service.approval_waiters.get(approval_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(status is ApprovalStatus.APPROVED)
    about = {"approval_id": approval_id, "session_id": resolved.session_id, "tool": resolved.tool}
    if status is ApprovalStatus.EXPIRED:
        log.warning("approval_expired", **about, reason=why, timeout_s=service.approval_timeout_s)
    else:
        log.info("approval_decided", **about, decision=status.value)
    return resolved


async def resolve(service: CommandService, command: ResolveApproval) -> Approval:
    """Approve or deny a pending approval."""
    status = ApprovalStatus.APPROVED if command.decision == "approve" else ApprovalStatus.DENIED
    return await settle(service, command.approval_id, status)

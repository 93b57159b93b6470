"""The command service: runs every write, journals replies, and orders them per session.

Quick commands (create, rename, end, delete, cancel, resolve) run at once, serialised per
session by a lock so that no two changes to one session interleave between reading its state and
writing the new one. A message's reply is a job: the user message and the journal entry are
committed before ``execute`` returns (so a ``202`` is never sent for something a crash could
lose), then the job waits in its session's lane. Each lane runs its jobs strictly in order in
one task; different sessions' lanes run concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from aiosvc.agents import AgentRegistry
from aiosvc.bus import Bus
from aiosvc.cache import Cache
from aiosvc.commands import approvals, external, hooks, replies, sessions
from aiosvc.commands.context import Context
from aiosvc.commands.jobs import Job, Lanes
from aiosvc.commands.locks import KeyedLocks
from aiosvc.commands.types import (
    AnyCommand,
    CancelReplies,
    CreateSession,
    DeleteSession,
    EndSession,
    PublishHook,
    RequestApproval,
    ResolveApproval,
    SendMessage,
    UpdateSession,
)
from aiosvc.config import LimitsConfig
from aiosvc.errors import Unavailable
from aiosvc.metrics import Metrics
from aiosvc.models import Approval
from aiosvc.store import Recovery, Store, StoreError

log = structlog.get_logger(__name__)

#: How long stopped replies get to write their final state before their tasks are cancelled.
FINALISE_TIMEOUT_S = 5.0


Handler = Callable[[Context, Any], Awaitable[Any]]

_HANDLERS: dict[type[Any], Handler] = {
    CreateSession: sessions.create,
    UpdateSession: sessions.update,
    EndSession: sessions.end,
    DeleteSession: sessions.delete,
    SendMessage: replies.send,
    CancelReplies: replies.cancel,
    ResolveApproval: approvals.resolve,
    RequestApproval: external.request,
    PublishHook: hooks.publish,
}


class CommandService:
    """Executes commands: hands each to its handler with the one :class:`Context`."""

    def __init__(
        self,
        *,
        store: Store,
        bus: Bus,
        cache: Cache,
        agents: AgentRegistry,
        limits: LimitsConfig,
        computer: str,
        approval_timeout_s: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.context = Context(
            store=store,
            bus=bus,
            cache=cache,
            agents=agents,
            metrics=metrics or Metrics(),
            lanes=Lanes(self._reply),
            limits=limits,
            computer=computer,
            approval_timeout_s=approval_timeout_s,
        )
        #: Why commands are refused for now: startup could not yet record what the previous
        #: run left unfinished (see :mod:`aiosvc.commands.startup`).
        self.not_ready: StoreError | None = None

    # What the handlers share, for reading (tests, diagnostics): handlers get the context.

    @property
    def lanes(self) -> Lanes:
        """The sessions' lanes of replies."""
        return self.context.lanes

    @property
    def locks(self) -> KeyedLocks:
        """The per-session locks."""
        return self.context.locks

    @property
    def limits(self) -> LimitsConfig:
        """The limits in force."""
        return self.context.limits

    @property
    def approval_timeout_s(self) -> float | None:
        """How long an approval waits for a decision (None: for ever)."""
        return self.context.approval_timeout_s

    @approval_timeout_s.setter
    def approval_timeout_s(self, value: float | None) -> None:
        self.context.approval_timeout_s = value

    def reconfigure(self, limits: LimitsConfig, approval_timeout_s: float | None) -> None:
        """Apply new limits and approval timeout (a reload) to what starts from now on."""
        self.context.limits = limits
        self.context.approval_timeout_s = approval_timeout_s

    async def execute(self, command: AnyCommand) -> Any:
        """Run one command and return its result; domain errors propagate to the caller."""
        if not self.context.lanes.accepting:
            raise Unavailable("the server is shutting down", code="shutting_down")
        if self.not_ready is not None:
            raise type(self.not_ready)(str(self.not_ready))  # a fresh one: 507 or 503
        # Shielded: a client that goes away mid-command must not leave it half done (stored
        # but not queued, say). Its outcome still lands; only the answer goes unheard.
        return await asyncio.shield(_HANDLERS[type(command)](self.context, command))

    async def wait_for_approval(self, approval_id: str) -> Approval:
        """The approval once it is resolved or expired (an external approval's ``?wait``)."""
        return await external.wait(self.context, approval_id)

    async def _reply(self, job: Job) -> None:
        await replies.run(self.context, job)

    # Lifecycle ---------------------------------------------------------------------------------

    def resume(self, recovery: Recovery) -> None:
        """Queue again the replies the previous run accepted but never started."""
        context = self.context
        loop = asyncio.get_running_loop()
        for command, payload in recovery.requeued:
            if command.session_id is None or context.cache.session(command.session_id) is None:
                continue
            job = Job(command, payload["message_id"], payload["reply_id"], loop.create_future())
            context.command_changed(command)
            context.lanes.enqueue(job)
        if recovery.requeued:
            log.info("replies_resumed", count=len(recovery.requeued))

    async def stop(self, grace_s: float) -> None:
        """Take no more commands, let running replies finish for up to ``grace_s``, then stop
        them (they end ``failed``: interrupted); queued replies stay journaled for next start."""
        lanes = self.context.lanes
        lanes.accepting = False
        self.context.stopping.set()
        await external.stop(self.context)  # nobody can decide any more: answer who waits
        for job in lanes.running():  # nobody can decide any more: they end now
            if job.waiting_for is not None:
                job.stop("interrupted")
        tasks = lanes.tasks()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        if not pending:
            return
        log.warning("replies_interrupted", count=len(pending))
        for job in lanes.running():
            job.stop("interrupted")
        _, stuck = await asyncio.wait(pending, timeout=FINALISE_TIMEOUT_S)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck)

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
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from aiosvc.agents import AgentRegistry
from aiosvc.bus import Bus, session_topic
from aiosvc.cache import Cache
from aiosvc.commands import approvals, hooks, replies, sessions
from aiosvc.commands.jobs import Job, Lane
from aiosvc.commands.locks import Held, KeyedLocks
from aiosvc.commands.types import (
    AnyCommand,
    CancelReplies,
    CreateSession,
    DeleteSession,
    EndSession,
    PublishHook,
    ResolveApproval,
    SendMessage,
    UpdateSession,
)
from aiosvc.config import LimitsConfig
from aiosvc.errors import NotFound, Unavailable
from aiosvc.metrics import Metrics
from aiosvc.models import Message, Session, is_valid_id
from aiosvc.store import Recovery, Store, StoreError

log = structlog.get_logger(__name__)

#: How long stopped replies get to write their final state before their tasks are cancelled.
FINALISE_TIMEOUT_S = 5.0


Handler = Callable[["CommandService", Any], Awaitable[Any]]

_HANDLERS: dict[type[Any], Handler] = {
    CreateSession: sessions.create,
    UpdateSession: sessions.update,
    EndSession: sessions.end,
    DeleteSession: sessions.delete,
    SendMessage: replies.send,
    CancelReplies: replies.cancel,
    ResolveApproval: approvals.resolve,
    PublishHook: hooks.publish,
}


class CommandService:
    """Executes commands; owns the per-session locks, lanes and approval waiters."""

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
        self.store = store
        self.bus = bus
        self.cache = cache
        self.agents = agents
        self.limits = limits
        self.computer = computer
        self.approval_timeout_s = approval_timeout_s
        self.metrics = metrics or Metrics()
        self.lanes: dict[str, Lane] = {}
        self.approval_waiters: dict[str, asyncio.Future[bool]] = {}
        self.locks = KeyedLocks()
        self.accepting = True
        #: Set when stopping begins: wakes replies that wait (for a decision, or for room
        #: on the disk) so they end at once.
        self.stopping = asyncio.Event()
        #: Why commands are refused for now: startup could not yet record what the previous
        #: run left unfinished (see :mod:`aiosvc.commands.startup`).
        self.not_ready: StoreError | None = None

    def reconfigure(self, limits: LimitsConfig, approval_timeout_s: float | None) -> None:
        """Apply new limits and approval timeout (a reload) to what starts from now on."""
        self.limits = limits
        self.approval_timeout_s = approval_timeout_s

    async def execute(self, command: AnyCommand) -> Any:
        """Run one command and return its result; domain errors propagate to the caller."""
        if not self.accepting:
            raise Unavailable("the server is shutting down", code="shutting_down")
        if self.not_ready is not None:
            raise type(self.not_ready)(str(self.not_ready))  # a fresh one: 507 or 503
        # Shielded: a client that goes away mid-command must not leave it half done (stored
        # but not queued, say). Its outcome still lands; only the answer goes unheard.
        return await asyncio.shield(_HANDLERS[type(command)](self, command))

    # Shared helpers for the handlers -----------------------------------------------------------

    def lock(self, session_id: str) -> Held:
        """Hold the lock that serialises changes to one session (``async with``)."""
        return self.locks.hold(session_id)

    def session_or_404(self, session_id: str) -> Session:
        """The session, or :class:`NotFound` (a malformed id is simply not found)."""
        session = self.cache.session(session_id) if is_valid_id(session_id) else None
        if session is None:
            raise NotFound.of("session", session_id)
        return session

    def publish_session(self, type_: str, session: Session) -> None:
        """Publish a session lifecycle event on ``sessions`` and the session's own topic."""
        self.bus.publish(type_, ("sessions", session_topic(session.id)), session)

    def publish_status(self, session: Session, detail: str | None = None) -> None:
        """Publish the session's status on its topic."""
        data: dict[str, Any] = {"session_id": session.id, "status": session.status}
        if detail is not None:
            data["detail"] = detail
        self.bus.publish("status", (session_topic(session.id),), data)

    def publish_message(self, type_: str, message: Message) -> None:
        """Publish a message event on its session's topic."""
        self.bus.publish(type_, (session_topic(message.session_id),), message)

    # Lanes -------------------------------------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        """Queue a reply behind the session's earlier ones and make sure its lane runs."""
        lane = self.lanes.get(job.session_id)
        if lane is None:
            lane = self.lanes[job.session_id] = Lane(job.session_id)
        lane.jobs.append(job)
        if lane.task is None and self.accepting:
            # A fresh context: the lane outlives the request that started it, and its log
            # lines must not carry that request's id.
            lane.task = asyncio.get_running_loop().create_task(
                self._run_lane(lane),
                name=f"aiosvc-lane-{lane.session_id}",
                context=contextvars.Context(),
            )

    def has_more(self, session_id: str) -> bool:
        """Tell whether replies are still queued in the session's lane."""
        lane = self.lanes.get(session_id)
        return bool(lane and lane.jobs) and self.accepting

    async def _run_lane(self, lane: Lane) -> None:
        structlog.contextvars.bind_contextvars(session_id=lane.session_id)
        try:
            while lane.jobs and self.accepting:
                job = lane.current = lane.jobs.popleft()
                try:
                    await replies.run(self, job)
                except Exception as exc:
                    log.exception(
                        "reply_crashed", session_id=lane.session_id, message_id=job.reply_id
                    )
                    if not job.done.done():
                        job.done.set_exception(exc)
                finally:
                    lane.current = None
        finally:
            lane.task = None
            if not lane.jobs and self.lanes.get(lane.session_id) is lane:
                del self.lanes[lane.session_id]

    # Lifecycle ---------------------------------------------------------------------------------

    def resume(self, recovery: Recovery) -> None:
        """Queue again the replies the previous run accepted but never started."""
        loop = asyncio.get_running_loop()
        for command, payload in recovery.requeued:
            if command.session_id is None or self.cache.session(command.session_id) is None:
                continue
            job = Job(command, payload["message_id"], payload["reply_id"], loop.create_future())
            self.cache.put_command(command)
            self.enqueue(job)
        if recovery.requeued:
            log.info("replies_resumed", count=len(recovery.requeued))

    async def stop(self, grace_s: float) -> None:
        """Take no more commands, let running replies finish for up to ``grace_s``, then stop
        them (they end ``failed``: interrupted); queued replies stay journaled for next start."""
        self.accepting = False
        self.stopping.set()
        for lane in self.lanes.values():  # nobody can decide any more: they end now
            if lane.current is not None and lane.current.waiting_for is not None:
                lane.current.stop("interrupted")
        tasks = [lane.task for lane in self.lanes.values() if lane.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        if not pending:
            return
        log.warning("replies_interrupted", count=len(pending))
        for lane in self.lanes.values():
            if lane.current is not None:
                lane.current.stop("interrupted")
        _, stuck = await asyncio.wait(pending, timeout=FINALISE_TIMEOUT_S)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck)

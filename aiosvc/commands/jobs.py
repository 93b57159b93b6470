"""Replies waiting or running in their sessions' lanes."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable

import attrs
import structlog

from aiosvc.models import Command, Message, Usage

log = structlog.get_logger(__name__)


@attrs.define(eq=False)
class Job:
    """One reply to produce: queued in its session's lane, then running."""

    command: Command
    message_id: str  # the user message it answers
    reply_id: str
    done: asyncio.Future[Message]
    prompt: str | None = None  # the user message's text, when known (not after a restart)
    stop_reason: str | None = None  # "cancelled" by a client, or "interrupted" by shutdown
    task: asyncio.Task[None] | None = None  # the agent's stream, while it runs
    waiting_for: str | None = None  # the approval it waits for, if it does
    usage: Usage | None = None  # tokens counted by the agent's upstream, when it says

    @property
    def session_id(self) -> str:
        """The session the job belongs to."""
        assert self.command.session_id is not None
        return self.command.session_id

    def stop(self, reason: str) -> None:
        """Stop the running agent stream; the reply then ends cancelled or failed."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.task is not None and not self.task.done():
            self.task.cancel()


@attrs.define(eq=False)
class Lane:
    """A session's replies: the running one and those queued behind it."""

    session_id: str
    jobs: deque[Job] = attrs.field(factory=deque)
    current: Job | None = None
    task: asyncio.Task[None] | None = None


Run = Callable[[Job], Awaitable[None]]
"""Produces one reply (the lanes' worker)."""


class Lanes:
    """Every session's lane: each runs its replies strictly in order in one task; different
    sessions' lanes run concurrently. A lane exists while it has replies."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._lanes: dict[str, Lane] = {}
        #: False once stopping began: no lane starts, and running ones take no next reply.
        self.accepting = True

    def __len__(self) -> int:
        """How many sessions have a lane now."""
        return len(self._lanes)

    def enqueue(self, job: Job) -> None:
        """Queue a reply behind the session's earlier ones and make sure its lane runs."""
        lane = self._lanes.get(job.session_id)
        if lane is None:
            lane = self._lanes[job.session_id] = Lane(job.session_id)
        lane.jobs.append(job)
        if lane.task is None and self.accepting:
            # A fresh context: the lane outlives the request that started it, and its log
            # lines must not carry that request's id.
            lane.task = asyncio.get_running_loop().create_task(
                self._drive(lane),
                name=f"aiosvc-lane-{lane.session_id}",
                context=contextvars.Context(),
            )

    def has_more(self, session_id: str) -> bool:
        """Tell whether replies are still queued in the session's lane."""
        lane = self._lanes.get(session_id)
        return bool(lane and lane.jobs) and self.accepting

    def take_queued(self, session_id: str) -> list[Job]:
        """Take the session's queued replies out of its lane (so none of them starts)."""
        lane = self._lanes.get(session_id)
        if lane is None:
            return []
        queued = list(lane.jobs)
        lane.jobs.clear()
        return queued

    def running(self, session_id: str | None = None) -> list[Job]:
        """The reply running in the session's lane, or in every lane."""
        lanes = self._lanes.values() if session_id is None else [self._lanes.get(session_id)]
        return [lane.current for lane in lanes if lane is not None and lane.current is not None]

    def tasks(self) -> list[asyncio.Task[None]]:
        """The lanes' tasks."""
        return [lane.task for lane in self._lanes.values() if lane.task is not None]

    async def _drive(self, lane: Lane) -> None:
        structlog.contextvars.bind_contextvars(session_id=lane.session_id)
        try:
            while lane.jobs and self.accepting:
                job = lane.current = lane.jobs.popleft()
                try:
                    await self._run(job)
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
            if not lane.jobs and self._lanes.get(lane.session_id) is lane:
                del self._lanes[lane.session_id]

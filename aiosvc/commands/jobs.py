"""A reply waiting or running in its session's lane."""

from __future__ import annotations

import asyncio
from collections import deque

import attrs

from aiosvc.models import Command, Message


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

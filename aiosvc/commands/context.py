"""What command handlers work with: the store, the bus, the cache, the per-session locks and
lanes, the decisions awaited, and the settings in force; never the command service itself.

The service makes one context and hands it to every handler. Handlers change the store, then
tell the rest of the process through the bus: events for clients (and the cache), and a
command's new state as an internal change (which only the cache keeps).
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

from aiosvc.agents import AgentRegistry
from aiosvc.bus import COMMAND_CHANGED, Bus, session_topic
from aiosvc.cache import Cache
from aiosvc.commands.jobs import Lanes
from aiosvc.commands.locks import Held, KeyedLocks
from aiosvc.config import LimitsConfig
from aiosvc.events import EventType
from aiosvc.metrics import Metrics
from aiosvc.models import ApprovalStatus, Command, Message, Session
from aiosvc.store import Store


class Decisions:
    """The approvals replies wait for, each with the future its decision resolves."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[ApprovalStatus]] = {}
        # Requests that wait for an external approval's outcome (``?wait=true``).
        self._watchers: dict[str, set[asyncio.Future[None]]] = {}

    def expect(self, approval_id: str) -> asyncio.Future[ApprovalStatus]:
        """The future that :meth:`decide` resolves for ``approval_id``."""
        waiter = self._waiting[approval_id] = asyncio.get_running_loop().create_future()
        return waiter

    def forget(self, approval_id: str) -> None:
        """Stop waiting for ``approval_id`` (decided, expired, or its reply stopped)."""
        self._waiting.pop(approval_id, None)

    def decide(self, approval_id: str, status: ApprovalStatus) -> None:
        """Wake the reply waiting for ``approval_id`` with its outcome, if one still waits, and
        its watchers."""
        waiter = self._waiting.get(approval_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(status)
        for watcher in self._watchers.pop(approval_id, ()):
            if not watcher.done():
                watcher.set_result(None)

    def watch(self, approval_id: str) -> asyncio.Future[None]:
        """A future done once ``approval_id`` is resolved (approved, denied or expired)."""
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(approval_id, set()).add(watcher)
        return watcher

    def unwatch(self, approval_id: str, watcher: asyncio.Future[None]) -> None:
        """Stop watching (the watching request went away)."""
        watchers = self._watchers.get(approval_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[approval_id]


@attrs.define(eq=False, kw_only=True)
class Context:
    """The collaborators and settings of the command handlers."""

    store: Store
    bus: Bus
    cache: Cache
    agents: AgentRegistry
    metrics: Metrics
    lanes: Lanes
    #: The limits in force (a reload replaces them for what starts from then on).
    limits: LimitsConfig
    computer: str
    approval_timeout_s: float | None = None
    locks: KeyedLocks = attrs.field(factory=KeyedLocks)
    decisions: Decisions = attrs.field(factory=Decisions)
    #: The expiry timers of pending external approvals, by approval id.
    timers: dict[str, asyncio.Task[None]] = attrs.field(factory=dict)
    #: Set when stopping begins: wakes replies that wait (for a decision, or for room on the
    #: disk) so they end at once.
    stopping: asyncio.Event = attrs.field(factory=asyncio.Event)

    def lock(self, session_id: str) -> Held:
        """Hold the lock that serialises changes to one session (``async with``)."""
        return self.locks.hold(session_id)

    def publish_session(self, type_: EventType, session: Session) -> None:
        """Publish a session lifecycle event on ``sessions`` and the session's own topic."""
        self.bus.publish(type_, ("sessions", session_topic(session.id)), session)

    def publish_status(self, session: Session, detail: str | None = None) -> None:
        """Publish the session's status on its topic."""
        data: dict[str, Any] = {"session_id": session.id, "status": session.status}
        if detail is not None:
            data["detail"] = detail
        self.bus.publish(EventType.STATUS, (session_topic(session.id),), data)

    def publish_message(self, type_: EventType, message: Message) -> None:
        """Publish a message event on its session's topic."""
        self.bus.publish(type_, (session_topic(message.session_id),), message)

    def command_changed(self, command: Command) -> None:
        """Tell the process a command's new state (once it is written)."""
        self.bus.tell(COMMAND_CHANGED, command)

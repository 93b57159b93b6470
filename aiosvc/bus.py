"""The event bus: publish/subscribe by topic, global event ids, a ring buffer for resume.

Publishing is synchronous: an event is numbered, serialised once, kept in the ring buffer and
handed to every matching subscriber before ``publish`` returns. Subscribers must therefore be
quick and never block (they queue; the web layer's outboxes do the slow part). Because nothing
awaits between ``subscribe`` and :meth:`Bus.since`, a client that subscribes and then reads the
buffer sees every event exactly once.

The ring buffer is bounded in bytes (and in count): it keeps the newest events that fit, each
counted as its data's JSON plus :data:`EVENT_OVERHEAD`, and that is the resume window. What it
keeps is right-sized: the JSON copied out of orjson's oversized buffer, without the publisher's
object (the data as a model, for subscribers in this process, is needed only while publishing).

Beside events, the bus carries internal changes (:meth:`Bus.tell`): handed synchronously to
this process's listeners, never numbered, kept or sent to clients (a command's new state, which
the cache keeps and clients read over REST).

Ids survive restarts: the bus hands out ids from a block reserved in the store, and reserves the
next block while half of the current one is still unused, so a restarted bus always starts above
every id it ever handed out.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import orjson
import structlog

from aiosvc.clock import utcnow
from aiosvc.convert import right_sized, unstructure
from aiosvc.events import HOOK_PREFIX, EventType
from aiosvc.metrics import HOOKS, Metrics
from aiosvc.models import Event, is_valid_id

log = structlog.get_logger(__name__)

ALL = "*"

Deliver = Callable[[Event, str], None]
"""A subscriber's callback: the event and the topic it matched (its primary topic for ``*``)."""


def session_topic(session_id: str) -> str:
    """The topic that carries everything about one session."""
    return f"session:{session_id}"


#: The topics that are not about one session (``*`` subscribes to every topic).
GLOBAL_TOPICS = frozenset(
    {"sessions", "approvals", "hooks", "projects", "computers", "system", ALL}
)


def is_valid_topic(topic: str) -> bool:
    """Tell whether a client may subscribe to ``topic``."""
    if topic in GLOBAL_TOPICS:
        return True
    prefix, _, session_id = topic.partition(":")
    return prefix == "session" and is_valid_id(session_id)


#: The internal change that carries a command's new state (a :class:`aiosvc.models.Command`).
COMMAND_CHANGED = "command.changed"

Listener = Callable[[Any], None]
"""An internal listener's callback: the changed object."""

#: Low-priority event types: a slow client may miss them (the final message carries all).
LOW_PRIORITY = frozenset({EventType.MESSAGE_DELTA, EventType.STATUS})

#: What one retained event costs beyond its data's JSON: the record, its time, type and
#: topics, and its slot in the buffer (measured with tracemalloc, see tests/test_bus.py).
EVENT_OVERHEAD = 512


def retained_bytes(event: Event) -> int:
    """What keeping ``event`` in the ring buffer costs, as the byte budget counts it."""
    return len(event.data_json) + EVENT_OVERHEAD


class EventTooLarge(ValueError):
    """An event's data is longer, as JSON, than its publisher allows."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes as JSON, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class Subscription:
    """One subscriber's interest in a set of topics; topics can change while it lives."""

    def __init__(self, bus: Bus, deliver: Deliver) -> None:
        self._bus = bus
        self.deliver = deliver
        self.topics: set[str] = set()
        #: Whether its topics count as a client's interest (a peer's relay stream does not:
        #: two daemons peered both ways would keep each other's streams open for nobody).
        self.interested = True

    def add(self, topics: Iterable[str]) -> None:
        """Start receiving events of these topics (``*`` means every topic)."""
        for topic in topics:
            if topic not in self.topics:
                self.topics.add(topic)
                self._bus._index.setdefault(topic, set()).add(self)
                if self.interested:
                    self._bus._interest(topic, +1)

    def remove(self, topics: Iterable[str]) -> None:
        """Stop receiving events of these topics."""
        for topic in topics:
            if topic in self.topics:
                self.topics.discard(topic)
                members = self._bus._index.get(topic)
                if members is not None:
                    members.discard(self)
                    if not members:
                        del self._bus._index[topic]
                if self.interested:
                    self._bus._interest(topic, -1)

    def close(self) -> None:
        """Stop receiving anything."""
        self.remove(list(self.topics))


class Bus:
    """Numbers, buffers and fans out events to subscribers by topic."""

    def __init__(
        self,
        *,
        buffer_size: int,
        max_bytes: int = 64 << 20,
        block: int = 1 << 20,
        metrics: Metrics | None = None,
    ) -> None:
        self._buffer: deque[Event] = deque()
        self._buffer_size = buffer_size
        self._max_bytes = max_bytes
        self._bytes = 0  # what the retained events cost, as counted by retained_bytes()
        #: Events published, by type (see :class:`aiosvc.metrics.Metrics`).
        self._published = (metrics or Metrics()).events_published
        self._index: dict[str, set[Subscription]] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._block = block
        self._reserve: Callable[[int], Awaitable[None]] | None = None
        self._reserving: asyncio.Task[None] | None = None
        self._reserved_until = 1 << 62
        #: Told ``(topic, True)`` when a topic gains its first subscriber and ``(topic,
        #: False)`` when it loses its last (what peers' relays follow).
        self.on_interest: Callable[[str, bool], None] | None = None
        self._interested: dict[str, int] = {}
        self.start_at(1)

    def _interest(self, topic: str, change: int) -> None:
        count = self._interested[topic] = self._interested.get(topic, 0) + change
        if count <= 0:
            del self._interested[topic]
        if count > 1 or (count == 1 and change < 0):
            return  # not the first to come nor the last to go
        held = count > 0
        if self.on_interest is not None:
            try:
                self.on_interest(topic, held)
            except Exception:  # a subscriber's call must not fail for it
                log.exception("interest_listener_failed", topic=topic)

    def interested(self, topic: str) -> bool:
        """Whether some interested subscriber follows ``topic`` now."""
        return topic in self._interested

    def start_at(
        self,
        first_id: int,
        reserved_until: int | None = None,
        reserve: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """Continue numbering at ``first_id``; ids up to ``reserved_until`` are reserved, and
        ``reserve(n)`` durably reserves every id up to ``n``."""
        self._next_id = first_id
        #: Every id below this came from an earlier run (or was never used).
        self.first_id = first_id
        # The highest id that can no longer be replayed: before this run, or evicted.
        self._floor = first_id - 1
        if reserved_until is not None:
            self._reserved_until = reserved_until
        self._reserve = reserve

    @property
    def last_id(self) -> int:
        """The id of the newest event published so far (``first_id - 1`` before any)."""
        return self._next_id - 1

    def subscribe(
        self, deliver: Deliver, topics: Iterable[str] = (), *, interested: bool = True
    ) -> Subscription:
        """Register ``deliver`` for ``topics``; more can be added on the subscription later.
        ``interested=False``: not a client's interest (what peers' relays follow)."""
        subscription = Subscription(self, deliver)
        subscription.interested = interested
        subscription.add(topics)
        return subscription

    def publish(self, type_: EventType, topics: Iterable[str], data: Any) -> Event:
        """Number, serialise and deliver one event of the API's types; return it (a type
        that is not an :class:`EventType` is a ``TypeError``, and nothing is published)."""
        if type_.__class__ is not EventType:  # a misspelt type would reach no consumer
            raise TypeError(f"not an event type: {type_!r}")
        return self._publish(type_, type_, topics, data, None)

    def publish_hook(
        self, name: str, topics: Iterable[str], data: Any, *, max_bytes: int | None = None
    ) -> Event:
        """Publish the hook event ``hook.<name>``; return it. With ``max_bytes``, data whose
        JSON is longer is :class:`EventTooLarge`, and nothing is published."""
        # hook types are chosen by clients: counted as one, or they would grow without bound
        return self._publish(HOOK_PREFIX + name, HOOKS, topics, data, max_bytes)

    def publish_relayed(
        self, type_: str, topics: Iterable[str], ts: str, data_json: bytes
    ) -> Event:
        """Publish again, under a local id, an event a peer published (its type, its time and
        its data's JSON as received); it reaches this daemon's clients, not its cache, and is
        never sent on to a peer."""
        event = Event(
            id=self._next_id,
            type=type_,
            topics=tuple(topics),
            ts=ts,
            data_json=right_sized(data_json),
            low_priority=type_ in LOW_PRIORITY,
            relayed=True,
        )
        self._next_id += 1
        counted = HOOKS if type_.startswith(HOOK_PREFIX) else type_
        self._published[counted] = self._published.get(counted, 0) + 1
        self._check_reservation()
        self._fan_out(event)
        self._retain(event)
        return event

    def _publish(
        self, type_: str, counted: str, topics: Iterable[str], data: Any, max_bytes: int | None
    ) -> Event:
        data_json = orjson.dumps(unstructure(data))
        if max_bytes is not None and len(data_json) > max_bytes:
            raise EventTooLarge(len(data_json), max_bytes)
        event = Event(
            id=self._next_id,
            type=type_,
            topics=tuple(topics),
            ts=utcnow(),
            data_json=right_sized(data_json),
            low_priority=type_ in LOW_PRIORITY,
            obj=data,
        )
        self._next_id += 1
        published = self._published
        published[counted] = published.get(counted, 0) + 1
        self._check_reservation()
        self._fan_out(event)
        # The ring buffer keeps the event without its object (needed only while publishing).
        self._retain(attrs.evolve(event, obj=None))
        return event

    def _retain(self, event: Event) -> None:
        """Keep ``event`` for resuming clients; drop the oldest past either bound (an event
        bigger than the whole budget is not kept at all)."""
        buffer = self._buffer
        buffer.append(event)
        self._bytes += retained_bytes(event)
        while buffer and (self._bytes > self._max_bytes or len(buffer) > self._buffer_size):
            oldest = buffer.popleft()
            self._bytes -= retained_bytes(oldest)
            self._floor = oldest.id

    @property
    def retained(self) -> tuple[int, int]:
        """How many events the ring buffer holds, and their cost in bytes."""
        return len(self._buffer), self._bytes

    def _fan_out(self, event: Event) -> None:
        seen: set[Subscription] = set()
        for topic in (*event.topics, ALL):
            members = self._index.get(topic)
            if not members:
                continue
            shown = event.topic if topic == ALL else topic
            for subscription in tuple(members):
                if subscription in seen:
                    continue
                seen.add(subscription)
                try:
                    subscription.deliver(event, shown)
                except Exception:  # one broken subscriber must not stop the others
                    log.exception("subscriber_failed", event_id=event.id, event_type=event.type)

    def tell(self, change: str, data: Any) -> None:
        """Hand an internal change to its listeners, in order, before returning (nothing is
        numbered, kept, or sent to clients)."""
        for listener in self._listeners.get(change, ()):
            try:
                listener(data)
            except Exception:  # one broken listener must not stop the others
                log.exception("listener_failed", change=change)

    def listen(self, change: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each internal ``change`` from now on; return what stops it."""
        listeners = self._listeners.setdefault(change, [])
        listeners.append(listener)
        return lambda: listeners.remove(listener) if listener in listeners else None

    def since(self, last_id: int) -> list[Event] | None:
        """Return every retained event after ``last_id``, oldest first.

        ``None`` means the events after ``last_id`` cannot all be replayed (the id is older than
        the buffer, from an earlier run, or from the future): the client must reset.
        """
        if last_id < self._floor or last_id > self.last_id:
            return None
        if not self._buffer:
            return []
        start = last_id - self._buffer[0].id + 1
        return list(itertools.islice(self._buffer, max(start, 0), None))

    def _check_reservation(self) -> None:
        """Reserve the next id block in the background once half of this one is used."""
        if self._reserve is None or self._reserving is not None:
            return
        if self._reserved_until - self._next_id > self._block // 2:
            return
        if self._next_id > self._reserved_until:
            log.error("event_id_reservation_behind", next_id=self._next_id)
        target = self._reserved_until + self._block
        self._reserving = asyncio.get_running_loop().create_task(self._extend(target))

    async def _extend(self, target: int) -> None:
        assert self._reserve is not None
        try:
            await self._reserve(target)
            self._reserved_until = target
        finally:
            self._reserving = None

    async def close(self) -> None:
        """Wait for an id reservation in flight, so the next run starts above every id."""
        if self._reserving is not None:
            await asyncio.shield(self._reserving)

"""One client's subscription and bounded outbox, shared by the WebSocket and SSE streams.

The bus hands events to :meth:`Outbox.deliver` synchronously; that only queues the frame, so a
slow client never slows the bus, the other clients or the command workers. Frames leave in
one of two ways, never both at once, so their order holds:

- at the end of the event loop's turn, the :class:`Flusher` writes what each outbox queued in
  that turn straight to its connection, in one write, when the outbox's writer is idle and the
  connection holds less than the low mark unsent: the common case, with no task to wake per
  frame;
- otherwise the outbox's writer task sends the queue, waiting for the client as long as it
  must (the slow path: a client that is behind, replays, goodbyes).

Memory per client is bounded by bytes, with priorities:

- a client is behind when its writer waits for it or its connection holds the low mark
  unsent (else all it has pending is this turn's, which the flusher writes at the turn's end).
  Low-priority events (``message.delta``, ``status``) are skipped for a client that is behind
  while its pending bytes are over the high mark, until they fall under the low mark; it then
  gets one ``dropped`` notice with the count (the ``message.completed`` that follows carries
  the text). A client that keeps up takes them up to half the limit in a turn, so one big
  frame does not cost it the deltas beside it; past that, one is skipped and told at once;
- any other frame that would take the pending bytes over the limit disconnects the client,
  which resumes from its last event id: high-priority events are never silently lost;
- an event whose data is over half the limit (a long reply's ``message.completed``) is sent
  cut and marked ``"truncated": true`` (:mod:`aiosvc.web.truncate`), live and replayed, so it
  never disconnects a client that keeps up; a low-priority one is skipped instead.

Frames that are not events (acknowledgements, notices) are queued in a 1-tuple, so that the
events a client was sent can be told from them without a count per event.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

import structlog

from aiosvc.bus import ALL, Bus
from aiosvc.config import StreamsConfig
from aiosvc.models import Event
from aiosvc.web.frames import Framing
from aiosvc.web.truncate import cut_frame

log = structlog.get_logger(__name__)

Send = Callable[[Sequence[bytes]], Awaitable[None]]
"""Writes frames to the client, in order (may block while the client is slow)."""


class DirectWriter(Protocol):
    """A connection that can take frames synchronously while it keeps up."""

    def writable(self) -> bool:
        """Tell whether the connection is open and holds less than the low mark unsent."""
        ...

    def write_now(self, frames: Sequence[bytes]) -> None:
        """Write ``frames`` at once, without waiting (raises ConnectionError when closed)."""
        ...


class Flusher:
    """Writes, at the end of each turn of the event loop, what outboxes queued during it.

    One callback per turn for every client, instead of one writer task woken per frame per
    client; and a client that got several frames in a turn gets them in one write.
    """

    def __init__(self) -> None:
        self._ready: list[Outbox] = []
        self._scheduled = False

    def add(self, outbox: Outbox) -> None:
        """Flush ``outbox`` at the end of this turn."""
        self._ready.append(outbox)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        ready, self._ready = self._ready, []
        for outbox in ready:
            try:
                outbox.flush()
            except Exception:  # one broken stream must not hold back the others
                log.exception("stream_flush_failed")
                outbox.end(Ending.CLOSED)


#: How many bytes of frames the writer hands to one send at most.
BATCH_BYTES = 64 * 1024


class Ending(enum.Enum):
    """Why a writer stopped."""

    CLOSED = "closed"  # the connection ended, or the handler closed the outbox
    OVERFLOW = "overflow"  # the client was too slow for a high-priority frame
    SHUTDOWN = "shutdown"  # the server is stopping


class Outbox:
    """A client's topics, its queue of frames, and the writer that sends them."""

    def __init__(
        self, bus: Bus, framing: Framing, limits: StreamsConfig, flusher: Flusher | None = None
    ) -> None:
        self._bus = bus
        self._framing = framing
        self._flusher = flusher
        self._direct: DirectWriter | None = None  # given by run()
        self._idle = False  # the writer waits for frames: the flusher may write for it
        self._flushing = False  # handed to the flusher for this turn
        self._low = limits.outbox_low_bytes
        self._high = limits.outbox_high_bytes
        self._limit = limits.outbox_limit_bytes
        # An event whose data is over this goes cut to values of at most _room bytes; a client
        # that keeps up takes low-priority frames up to it in one turn.
        self._whole = self._limit // 2
        self._room = self._limit // 16
        # Event frames, other frames (in a 1-tuple), and replays: a replay is a run of retained
        # events turned into frames only as the writer reaches it (they are already in
        # memory, in the bus's ring buffer).
        self._queue: deque[bytes | tuple[bytes] | deque[tuple[Event, str]]] = deque()
        self._live_from: dict[str, int] = {}  # topic -> first event id delivered live
        self._wakeup = asyncio.Event()
        self.pending = 0  # bytes queued, not yet handed to the transport
        self.dropping = False
        self.dropped = 0  # low-priority events skipped since the last notice
        self.dropped_total = 0  # low-priority events skipped in all
        self.sent = 0  # frames written, for metrics and tests
        self.events_sent = 0  # of which events
        self.overflow_bytes = 0  # what was pending when the client was given up on
        self.ending: Ending | None = None
        # Called (synchronously) when the client is given up on for being too slow, so the
        # stream can stop a writer that is stuck on it.
        self.on_overflow: Callable[[], None] | None = None
        # Called with the count when a ``dropped`` notice is queued (skipped events are told
        # in bulk, never one by one).
        self.on_dropped: Callable[[int], None] | None = None
        #: A peer's stream: events relayed from elsewhere are not sent (no loops).
        self.origin_only = False
        self._subscription = bus.subscribe(self.deliver)

    def for_peer(self) -> None:
        """Serve a peer's relay: only this machine's own events, and no interest of a client
        (call before :meth:`subscribe`)."""
        self.origin_only = True
        self._subscription.interested = False

    @property
    def topics(self) -> frozenset[str]:
        """The topics subscribed to now."""
        return frozenset(self._subscription.topics)

    # Subscribing -------------------------------------------------------------------------------

    def subscribe(
        self, topics: Iterable[str], since: int | None = None, preface: bytes = b""
    ) -> bool:
        """Add topics; with ``since``, first replay their retained events after that id.

        ``preface`` (an acknowledgement) is queued before the replay.

        Subscribing and reading the ring buffer happen with no ``await`` in between, so the
        replay and the live stream neither overlap nor leave a gap. Returns False when the
        events after ``since`` are no longer all retained: a ``reset`` notice was queued.
        """
        requested = list(topics)
        start = self._bus.last_id + 1
        new = [t for t in requested if t not in self._live_from]
        self._subscription.add(new)
        for topic in new:
            self._live_from[topic] = start
        if preface:
            self.put(preface)
        if since is None:
            return True
        events = self._bus.since(since)
        if events is None:
            self.put(self._framing.reset(self._bus.last_id))
            return False
        everything = ALL in requested
        replay: deque[tuple[Event, str]] = deque()
        for event in events:
            if self._sent_live(event) or (event.relayed and self.origin_only):
                continue
            shown = (
                event.topic
                if everything
                else next((t for t in event.topics if t in requested), None)
            )
            if shown is not None:
                replay.append((event, shown))
        if replay and self.ending is None:
            self._queue.append(replay)
            self._wake_writer()
        return True

    def _sent_live(self, event: Event) -> bool:
        """Tell whether an earlier subscription of this client already delivered ``event``."""
        for topic in (*event.topics, ALL):
            start = self._live_from.get(topic)
            if start is not None and start <= event.id:
                return True
        return False

    def unsubscribe(self, topics: Iterable[str]) -> None:
        """Stop receiving these topics."""
        topics = list(topics)
        self._subscription.remove(topics)
        for topic in topics:
            self._live_from.pop(topic, None)

    # Queueing (called synchronously by the bus and the handlers) -------------------------------

    def deliver(self, event: Event, topic: str) -> None:
        """Queue an event's frame, or skip it, or give up on the client."""
        if self.ending is not None or (event.relayed and self.origin_only):
            return
        if len(event.data_json) > self._whole and not event.low_priority:
            frame = cut_frame(self._framing, event, topic, self._room)
        else:
            frame = self._framing.event(event, topic)
        size = len(frame)
        if (
            event.low_priority
            and (self.dropping or self.pending + size > self._high)
            and self._skips(size)
        ):
            return
        self._put(frame, size)

    def _skips(self, size: int) -> bool:
        """Tell whether a low-priority frame of ``size`` bytes, over the high mark, is skipped
        (and count it): always for a client that is behind, and for one that keeps up only
        past half the limit."""
        if not self.dropping and self._keeping_up():
            if self.pending + size <= self._whole:
                return False  # all of it is this turn's: the flusher writes it at its end
            self.dropped += 1  # skipped alone, and told at once: the client is not behind
            self.dropped_total += 1
            self._tell_dropped(self.put)
            return True
        self.dropping = True
        self.dropped += 1
        self.dropped_total += 1
        return True

    def _keeping_up(self) -> bool:
        """Tell whether the client took everything of earlier turns (its writer is idle and
        its connection holds less than the low mark), so what is pending is this turn's."""
        direct = self._direct
        return self._idle and self._flusher is not None and direct is not None and direct.writable()

    def _tell_dropped(self, queue: Callable[[bytes], None]) -> None:
        """Queue the ``dropped`` notice with the count so far, and reset the count."""
        notice = self._framing.dropped(self.dropped)
        if self.on_dropped is not None:
            self.on_dropped(self.dropped)
        self.dropped = 0
        queue(notice)

    def put(self, frame: bytes) -> None:
        """Queue a frame that is not an event (it must not be skipped either)."""
        self._put((frame,), len(frame))

    def _put(self, item: bytes | tuple[bytes], size: int) -> None:
        """Queue a frame that must not be skipped; past the limit the client is dropped."""
        if self.ending is not None:
            return
        if self.pending + size > self._limit:
            self.end(Ending.OVERFLOW)
            return
        self._queue.append(item)
        self.pending += size
        if not self._idle:
            return  # the writer is busy, and takes the queue when it is done
        if self._direct is not None and self._flusher is not None:
            if not self._flushing:
                self._flushing = True
                self._flusher.add(self)
        else:
            self._wake_writer()

    def flush(self) -> None:
        """At the end of the turn: write the queue at once if the writer is idle and the
        client keeps up; else wake the writer, which waits for the client."""
        self._flushing = False
        direct = self._direct
        if not self._idle or self.ending is not None or direct is None:
            return  # the writer took over (end() and subscribe() wake it)
        try:
            while self._queue and direct.writable():
                batch = self._next_batch()
                if batch:  # (a replay's skipped events make none: an empty chunk ends SSE)
                    direct.write_now(batch)
        except (ConnectionError, RuntimeError):  # the client went away
            self.end(Ending.CLOSED)
            return
        if self._queue:  # the client is behind: the writer waits for it
            self._wake_writer()

    def _wake_writer(self) -> None:
        self._idle = False
        self._wakeup.set()

    def end(self, why: Ending) -> None:
        """Stop taking events; the writer sends what the reason allows, then returns it."""
        if self.ending is not None:
            return
        self.ending = why
        self._subscription.close()
        if why is Ending.OVERFLOW:
            self.overflow_bytes = self.pending
            self._queue.clear()  # give the memory back now
            self.pending = 0
            if self.on_overflow is not None:
                self.on_overflow()
        elif why is Ending.SHUTDOWN:
            final = self._framing.shutdown()
            if final:
                self._queue.append((final,))
                self.pending += len(final)
        self._wake_writer()

    # Writing -----------------------------------------------------------------------------------

    async def run(self, send: Send, direct: DirectWriter | None = None) -> Ending:
        """Write frames until the outbox ends; return why it ended.

        With ``direct`` (and a flusher), frames queued while the writer is idle are written
        by the flusher at the end of the turn instead, as long as the client keeps up.
        """
        self._direct = direct
        try:
            while True:
                if not self._queue:
                    if self.ending is not None:
                        return self.ending
                    self._wakeup.clear()
                    self._idle = True  # until _wake_writer
                    await self._wakeup.wait()
                    continue
                if self.ending is Ending.OVERFLOW:
                    return self.ending
                batch = self._next_batch()
                if batch:
                    await send(batch)
        finally:
            self._idle = False
            self._direct = None
            if self.ending is None:
                self.end(Ending.CLOSED)

    def _next_batch(self) -> list[bytes]:
        """Take frames, in order, up to about :data:`BATCH_BYTES`."""
        batch: list[bytes] = []
        size = 0
        controls = 0
        queue = self._queue
        while queue and size < BATCH_BYTES:
            head = queue[0]
            if isinstance(head, bytes):
                queue.popleft()
                self.pending -= len(head)
                frame = head
            elif isinstance(head, tuple):
                queue.popleft()
                frame = head[0]
                self.pending -= len(frame)
                controls += 1
            else:
                event, topic = head.popleft()
                if not head:
                    queue.popleft()
                replayed = self._replayed(event, topic)
                if replayed is None:
                    continue
                frame = replayed
            batch.append(frame)
            size += len(frame)
        self.sent += len(batch)
        self.events_sent += len(batch) - controls
        if self.dropping and self.pending <= self._low:
            self.dropping = False
            if self.dropped:
                self._tell_dropped(self._append)
        return batch

    def _replayed(self, event: Event, topic: str) -> bytes | None:
        """A retained event's frame, built for this client only (see Bus.publish); an event
        too large is cut as it was live, or skipped (and counted) if it is low-priority."""
        if len(event.data_json) <= self._whole:
            return self._framing.event(event, topic, keep=False)
        if not event.low_priority:
            return cut_frame(self._framing, event, topic, self._room, keep=False)
        self.dropping = True  # told at the end of this batch
        self.dropped += 1
        self.dropped_total += 1
        return None

    def _append(self, frame: bytes) -> None:
        """Queue a notice from the writer's side (it is taking the queue: no wake-up)."""
        self._queue.append((frame,))
        self.pending += len(frame)

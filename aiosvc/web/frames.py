"""Wire frames for the two stream transports, each event's built once and shared by clients.

Couplings to how aiohttp frames what it writes (marked ``# aiohttp-internals:``), since the
streams write these frames to the transport themselves, past aiohttp's writers:
:func:`websocket_text` is the frame aiohttp's WebSocket writer makes of a text message on an
uncompressed server socket, and :func:`http_chunk` the chunk its HTTP writer makes of a piece
of a chunked body; ``tests/test_frames.py`` pins both against aiohttp's own writers.

The frames of an event are built for its first client and shared by the others
(:data:`FANOUT`): the core's events know nothing of wire frames.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from aiosvc.clock import utcnow
from aiosvc.models import Event


class FanOutFrames:
    """The frames of the event being fanned out, by kind and topic: built for its first client,
    shared by the others.

    The bus hands an event to every subscriber before it publishes the next one, so only the
    event in hand is worth keeping frames for: another event starts afresh. The event is held
    weakly and its frames go with it, so nothing outlives the fan-out but the frames queued in
    outboxes (a replay, of the ring buffer's copy of an event, builds its frames unkept).
    """

    def __init__(self) -> None:
        self._event: weakref.ref[Event] | None = None
        self._frames: dict[tuple[str, str], bytes] = {}

    def of(self, event: Event) -> dict[tuple[str, str], bytes]:
        """The frames kept for ``event`` (none yet if it is not the event in hand: now it is)."""
        held = self._event
        if held is None or held() is not event:
            self._frames = {}
            self._event = weakref.ref(event, self._forget)
        return self._frames

    def kept(self, event: Event) -> Mapping[tuple[str, str], bytes]:
        """The frames kept for ``event``, without making it the event in hand."""
        held = self._event
        return self._frames if held is not None and held() is event else {}

    def __len__(self) -> int:
        """How many frames are kept (for the event in hand)."""
        return len(self._frames)

    def _forget(self, gone: weakref.ref[Event]) -> None:
        if gone is self._event:  # (not an event already replaced by a newer one)
            self._event = None
            self._frames = {}


#: The frames of the event in hand, for both transports and every framing.
FANOUT = FanOutFrames()


class Framing(Protocol):
    """How one transport writes events and notices."""

    #: The transport's name, as logs and cached frames know it ("ws" or "sse").
    name: str

    def event(self, event: Event, topic: str, keep: bool = True) -> bytes:
        """The frame carrying ``event`` as seen on ``topic``; ``keep`` it in :data:`FANOUT`
        for the other clients of a fan-out (a replay must not: it would evict the frames of
        the event in hand for an event nobody else is sent now)."""
        ...

    def dropped(self, count: int) -> bytes:
        """The notice that ``count`` low-priority events were skipped."""
        ...

    def reset(self, last_event_id: int) -> bytes:
        """The notice that the client must refetch state: its resume point is gone."""
        ...

    def shutdown(self) -> bytes:
        """The last frame before the server closes the stream for shutdown (may be empty)."""
        ...


# Server-to-client WebSocket text frames (RFC 6455 5.2): FIN and opcode 1, no mask, then the
# payload length in 7 bits, or 126 and 16 bits, or 127 and 64 bits.
_SHORT_HEADERS = [bytes((0x81, n)) for n in range(126)]


# aiohttp-internals: the frame aiohttp's WebSocketWriter writes for a text message.
def websocket_text(payload: bytes) -> bytes:
    """``payload`` as one unmasked, uncompressed WebSocket text frame."""
    size = len(payload)
    if size < 126:
        return _SHORT_HEADERS[size] + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


# aiohttp-internals: the chunk aiohttp's StreamWriter writes for a piece of a chunked body.
def http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class WebSocketFraming:
    """JSON text frames: ``{"type": "event", "event": {...}}`` and friends."""

    name = "ws"

    def event(self, event: Event, topic: str, keep: bool = True) -> bytes:
        """``{"type": "event", "event": {"id", "type", "topic", "ts", "data"}}``."""
        key = ("ws", topic)
        kept = FANOUT.of(event) if keep else {}  # built once, whatever the number of clients
        frame = kept.get(key)
        if frame is None:
            frame = b'{"type":"event","event":%s}' % event.envelope_json(topic)
            kept[key] = frame
        return frame

    def dropped(self, count: int) -> bytes:
        """``{"type": "dropped", "count": N}``."""
        return b'{"type":"dropped","count":%d}' % count

    def reset(self, last_event_id: int) -> bytes:
        """``{"type": "reset", "last_event_id": N}``: resume from N after refetching."""
        return b'{"type":"reset","last_event_id":%d}' % last_event_id

    def shutdown(self) -> bytes:
        """Nothing: the close frame (1001) says it."""
        return b""

    @staticmethod
    def message(kind: str, **fields: Any) -> bytes:
        """A control frame such as ``hello``, ``ack`` or ``error``."""
        return orjson.dumps({"type": kind, **fields})


class SSEFraming:
    """``id:`` / ``event:`` / ``data: {"topic", "ts", "data"}`` blocks."""

    name = "sse"

    def event(self, event: Event, topic: str, keep: bool = True) -> bytes:
        """One SSE event block, its id the event's id."""
        key = ("sse", topic)
        kept = FANOUT.of(event) if keep else {}  # built once, whatever the number of clients
        frame = kept.get(key)
        if frame is None:
            frame = b'id: %d\nevent: %s\ndata: {"topic":%s,"ts":"%s","data":%s}\n\n' % (
                event.id,
                event.type.encode(),
                orjson.dumps(topic),
                event.ts.encode(),
                event.data_json,
            )
            kept[key] = frame
        return frame

    def dropped(self, count: int) -> bytes:
        """``event: dropped`` with ``{"count": N}`` (no id: the client's resume point stays)."""
        return self._notice("dropped", {"count": count})

    def reset(self, last_event_id: int) -> bytes:
        """``event: reset`` whose id moves the client's resume point to now."""
        data = {"last_event_id": last_event_id}
        return b"id: %d\n%s" % (last_event_id, self._notice("reset", data))

    def shutdown(self) -> bytes:
        """``event: shutdown``: the server is stopping; reconnect and resume later."""
        return self._notice("shutdown", {"reason": "the server is shutting down"})

    @staticmethod
    def _notice(kind: str, data: dict[str, Any]) -> bytes:
        body = orjson.dumps({"topic": "system", "ts": utcnow(), "data": data})
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), body)

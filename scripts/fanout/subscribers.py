"""What every subscriber shares, whichever client it runs on.

That is the bookkeeping of deliveries, and the parsing of WebSocket text messages and SSE bodies.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson


class Recorder:
    """What the subscribers received in the current phase."""

    def __init__(self) -> None:
        self.run = -1  # the phase whose events count; others are "stale"
        self.sent: list[float] = []  # the publisher's time.time() of each delivery
        self.arrived: list[float] = []  # when its bytes reached the socket (kernel timestamp)
        self.seen: list[float] = []  # when the client process parsed it
        self.expected = 1 << 62
        self.done = asyncio.Event()
        self.stale = 0
        self.other = 0
        self.unstamped = 0

    def begin(self, run: int) -> None:
        """Start counting the events of phase ``run``."""
        self.run = run
        self.sent, self.arrived, self.seen = [], [], []
        self.expected = 1 << 62
        self.done.clear()
        self.stale = self.other = self.unstamped = 0

    def expect(self, total: int) -> None:
        """Set the number of deliveries that ends the phase."""
        self.expected = total
        if len(self.sent) >= total:
            self.done.set()


class Sub:
    """One subscriber: what it received in this phase, and whether its stream ended."""

    kind = "?"

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.ids: list[int] = []
        self.seqs: list[int] = []
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ended: str | None = None
        self.frames = 0  # event frames of any phase
        self.close_code: int | None = None

    def reset(self) -> None:
        """Forget the previous phase."""
        self.ids = []
        self.seqs = []

    def record(self, event_id: int, data: Any, arrived: float, now: float) -> None:
        """Book one event whose hook data is ``data``."""
        self.frames += 1
        recorder = self.recorder
        try:
            run, seq, sent = data["run"], data["seq"], data["t"]
        except (TypeError, KeyError):
            recorder.other += 1
            return
        if run != recorder.run:
            recorder.stale += 1
            return
        self.ids.append(event_id)
        self.seqs.append(seq)
        recorder.sent.append(sent)
        recorder.arrived.append(arrived)
        recorder.seen.append(now)
        if len(recorder.sent) >= recorder.expected:
            recorder.done.set()

    def end(self, why: str) -> None:
        """The stream ended (or never started)."""
        if self.ended is None:
            self.ended = why
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))

    def on_ws_text(self, payload: bytes | str, arrived: float, now: float) -> None:
        """Handle one WebSocket text message."""
        message = orjson.loads(payload)
        kind = message.get("type")
        if kind == "event":
            event = message["event"]
            self.record(event["id"], event["data"]["data"], arrived, now)
        elif kind == "ack":
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "hello":
            self.send_text(SUBSCRIBE)
        else:  # error, dropped, reset
            self.recorder.other += 1
            if kind == "error":
                self.end(f"error frame: {message.get('error')}")

    def send_text(self, payload: bytes) -> None:
        """Send a WebSocket text message."""
        raise NotImplementedError

    async def open(self, port: int) -> None:
        """Connect and subscribe to ``hooks``."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection."""
        raise NotImplementedError


SUBSCRIBE = orjson.dumps({"op": "subscribe", "topics": ["hooks"], "id": 1})


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client-to-server WebSocket frame (FIN set, masked as clients must)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    else:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
    return header + mask + masked


class SSEBody:
    """Splits an SSE body (already de-chunked) into events for a subscriber."""

    def __init__(self, sub: Sub) -> None:
        self.sub = sub
        self.buffer = b""

    def feed(self, data: bytes, arrived: float, now: float) -> None:
        """Take body bytes; book every complete event."""
        if b"\r" in data:  # aiohttp-sse's pings use CRLF; events use LF
            data = data.replace(b"\r\n", b"\n")
        buffer = self.buffer + data if self.buffer else data
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            block = buffer[start:end]
            start = end + 2
            if block.startswith(b"id: "):
                line_end = block.index(b"\n")
                body = orjson.loads(block[block.find(b"\ndata: ") + 7 :])
                self.sub.record(int(block[4:line_end]), body["data"]["data"], arrived, now)
            elif block.startswith(b"retry:"):
                if not self.sub.ready.done():
                    self.sub.ready.set_result(None)
            elif block.startswith(b"event: "):  # reset, dropped, shutdown notices
                self.sub.recorder.other += 1
        self.buffer = buffer[start:]

"""The open streams (WebSocket and SSE), so that shutdown can close every one of them."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Protocol

import structlog

from aiosvc.web.outbox import Flusher

log = structlog.get_logger(__name__)


class Stream(Protocol):
    """An open stream that can be told the server is stopping."""

    @property
    def kind(self) -> str:
        """Its transport: "ws" or "sse"."""
        ...

    async def close_for_shutdown(self) -> None:
        """Send the stream's last word (1001, or a final SSE event) and end it."""
        ...


class OpenStreams:
    """Keeps the open streams and closes them all, within a bound, at shutdown; their outboxes
    share one flusher."""

    def __init__(self) -> None:
        self._streams: set[Stream] = set()
        self.flusher = Flusher()

    def __len__(self) -> int:
        return len(self._streams)

    def by_transport(self) -> Counter[str]:
        """How many streams are open, by transport."""
        return Counter(stream.kind for stream in self._streams)

    def add(self, stream: Stream) -> None:
        """Track a stream from when it is prepared."""
        self._streams.add(stream)

    def discard(self, stream: Stream) -> None:
        """Forget a stream that ended."""
        self._streams.discard(stream)

    async def close_all(self, within_s: float) -> None:
        """Close every stream, waiting at most ``within_s`` seconds for all of them."""
        streams = list(self._streams)
        if not streams:
            return
        tasks = [asyncio.ensure_future(stream.close_for_shutdown()) for stream in streams]
        _, slow = await asyncio.wait(tasks, timeout=within_s)
        for task in slow:
            task.cancel()
        if slow:
            await asyncio.wait(slow)
            log.warning("streams_closed_slowly", count=len(slow))

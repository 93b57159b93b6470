"""What the WebSocket and SSE streams share: the outbox's writer task, how it ends, and the
account of it (the ``stream_closed`` line and the stream metrics)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import Sequence
from typing import ClassVar

import structlog

from aiosvc.metrics import Metrics
from aiosvc.web.outbox import Ending, Outbox

log = structlog.get_logger(__name__)

#: How long closing a stream may take before its connection is simply aborted.
CLOSE_TIMEOUT_S = 2.0
#: A client that keeps falling behind gets a ``stream_events_dropped`` line at most this often.
DROP_LOG_INTERVAL_S = 10.0


class StreamConnection(abc.ABC):
    """One client's stream: an outbox, a writer task, and the transport's way to end."""

    #: The transport, as logs and metrics name it: "ws" or "sse".
    kind: ClassVar[str]

    def __init__(
        self,
        outbox: Outbox,
        transport: asyncio.Transport | None,
        low_mark: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.outbox = outbox
        outbox.on_overflow = self._overflowed
        outbox.on_dropped = self._dropped
        self.writer: asyncio.Task[None] | None = None
        self.transport = transport
        self._low_mark = low_mark
        self.metrics = metrics or Metrics()
        self.opened = time.monotonic()
        #: Why the stream ends, as the first to know said it (see :meth:`end_reason`).
        self.reason: str | None = None
        self._drops_unlogged = 0
        self._drops_logged_at = -math.inf
        # The handler's context (its request id): lines about the stream written from the
        # flusher, which runs in whichever context published the event, are written in it.
        self._context = contextvars.copy_context()

    def end_reason(self, reason: str) -> None:
        """Record why the stream ends: the first reason given wins (a server that closes a
        stream sees the client's side close next, and that is not why)."""
        if self.reason is None:
            self.reason = reason

    def closed(self) -> None:
        """Log and count how the stream ended; its handler calls this once, as it returns."""
        outbox = self.outbox
        reason = self.reason or "closed_by_client"
        self.metrics.stream_dropped_events += outbox.dropped  # those not yet told in a notice
        self.metrics.stream_ended(reason)
        log.info(
            "stream_closed",
            transport=self.kind,
            reason=reason,
            duration_s=round(time.monotonic() - self.opened, 3),
            events_sent=outbox.events_sent,
            dropped=outbox.dropped_total,
        )

    def _dropped(self, count: int) -> None:
        """The outbox told the client ``count`` events were skipped: count them, and say so
        now and then (a client that keeps falling behind would otherwise fill the log)."""
        self.metrics.stream_dropped_events += count
        self._drops_unlogged += count
        now = time.monotonic()
        if now - self._drops_logged_at >= DROP_LOG_INTERVAL_S:
            self._context.run(
                log.warning,
                "stream_events_dropped",
                transport=self.kind,
                count=self._drops_unlogged,
                total=self.outbox.dropped_total,
            )
            self._drops_unlogged = 0
            self._drops_logged_at = now

    def writable(self) -> bool:
        """Tell whether the connection is open and holds less than the low mark unsent."""
        transport = self.transport
        return (
            transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() < self._low_mark
        )

    @abc.abstractmethod
    def write_now(self, frames: Sequence[bytes]) -> None:
        """Write frames to the transport at once, in the stream's wire framing."""

    def start_writer(self) -> None:
        """Start sending the outbox's frames."""
        self.writer = asyncio.get_running_loop().create_task(self._write())

    @abc.abstractmethod
    async def send(self, frames: Sequence[bytes]) -> None:
        """Write frames to the client (may block while it is slow)."""

    @abc.abstractmethod
    async def finish(self, ending: Ending) -> None:
        """End the stream the way the transport says why (close code, final event)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the connection without ceremony (a stalled client cannot take a goodbye)."""

    async def _write(self) -> None:
        try:
            ending = await self.outbox.run(self.send, self)
        except asyncio.CancelledError:
            if self.outbox.ending is not Ending.OVERFLOW:
                raise
            # _overflowed stopped the writer where it was stuck on the slow client.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            ending = Ending.OVERFLOW
        except (ConnectionError, RuntimeError):  # the client went away mid-write
            self.outbox.end(Ending.CLOSED)
            return
        if ending is Ending.OVERFLOW:
            log.warning(
                "stream_client_too_slow",
                transport=self.kind,
                reason="too_slow",
                pending_bytes=self.outbox.overflow_bytes,
                events_sent=self.outbox.events_sent,
                dropped=self.outbox.dropped_total,
            )
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.finish(ending)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def _overflowed(self) -> None:
        self.end_reason("too_slow")
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()

    async def close_for_shutdown(self) -> None:
        """Send what is queued and the shutdown goodbye, then end the stream."""
        self.end_reason("server_shutdown")
        self.outbox.end(Ending.SHUTDOWN)
        if self.writer is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S * 2):
                await asyncio.shield(self.writer)
        except TimeoutError:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer
            self.abort()

    async def stop_writer(self) -> None:
        """End the outbox and the writer (the handler is returning): a writer that is saying
        goodbye (shutdown, too slow) may finish that, within the bound; any other stops now."""
        self.outbox.end(Ending.CLOSED)
        writer = self.writer
        if writer is None or writer.done():
            return
        if self.outbox.ending is not Ending.CLOSED:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S * 2):
                    await asyncio.shield(writer)
        if not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

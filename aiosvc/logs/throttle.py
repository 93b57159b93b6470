"""Log lines that come in storms: the first at once, then one every few seconds with a count.

A flood of refused connections, timed-out heads or failed ``accept()`` calls must not turn
into a flood of log lines (asyncio once logged ``accept() out of system resource`` with its
traceback thousands of times a second when descriptors ran out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

#: The least time between two lines of one kind.
EVERY_S = 5.0
#: Kinds of loop errors remembered at once (each its own throttle).
MAX_KINDS = 64


class Throttled:
    """One kind of log line: written at once, then at most once every ``every_s`` seconds;
    a line written after a quiet spell, or at the end of one, says how many were left out
    (``repeated``)."""

    def __init__(
        self,
        event: str,
        *,
        level: str = "warning",
        every_s: float = EVERY_S,
        logger: Any = None,
    ) -> None:
        self.event = event
        self.every_s = every_s
        self._logger = logger or log
        self._level = level
        self._next = 0.0  # monotonic time from which the next line may be written
        self._left_out = 0
        self._last: dict[str, Any] = {}
        self._summary: asyncio.TimerHandle | None = None

    def __call__(self, **fields: Any) -> None:
        """Log ``fields`` now, or count them towards the next line."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            self._write(fields)
            return
        self._left_out += 1
        self._last = fields
        if self._summary is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: the next call past the spell writes the count
                return
            self._summary = loop.call_later(self._next - now, self._flush)

    def _write(self, fields: dict[str, Any]) -> None:
        if self._left_out:
            fields = {**fields, "repeated": self._left_out}
            self._left_out = 0
        # (looked up now: a logger bound before logging is configured keeps the defaults)
        getattr(self._logger, self._level)(self.event, **fields)

    def _flush(self) -> None:
        self._summary = None
        if self._left_out:
            self._next = time.monotonic() + self.every_s
            fields, self._last = self._last, {}
            fields.pop("exc_info", None)  # the first line of the spell had the traceback
            self._write(fields)


class LoopErrors:
    """The event loop's exception handler: asyncio's errors as our log lines, each kind
    (message and exception type) throttled on its own."""

    def __init__(self, every_s: float = EVERY_S) -> None:
        self.every_s = every_s
        self._kinds: dict[Hashable, Throttled] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Log one error the loop reports."""
        message = str(context.get("message") or "unhandled error in the event loop")
        exc = context.get("exception")
        kind = (message, type(exc))
        throttled = self._kinds.get(kind)
        if throttled is None:
            if len(self._kinds) >= MAX_KINDS:
                self._kinds.pop(next(iter(self._kinds)))
            throttled = self._kinds[kind] = Throttled(
                "event_loop_error", level="error", every_s=self.every_s
            )
        # What asyncio would show beside the message (the socket, task or handle), short.
        shown = {
            key: repr(value)[:300]
            for key, value in context.items()
            if key not in ("message", "exception")
        }
        fields: dict[str, Any] = {"message": message, **shown}
        if exc is not None:
            fields["exc_info"] = exc
        throttled(**fields)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Make the loop log its errors through :class:`LoopErrors`."""
    loop.set_exception_handler(LoopErrors())

"""The canonical line of each request, written at the route's level.

Every request writes one line, so its cost is paid on every request: through structlog's
bound logger and processor chain it took about 30 us, several times what the rest of a small
request's front door costs. In JSON mode the line is therefore written directly, with the
same fields a structlog line has (event, level, logger, timestamp, the request id) and the
same redaction. Console mode and tests (with structlog's capture) keep going through structlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from aiosvc.clock import utcnow
from aiosvc.logs.output import Stderr
from aiosvc.logs.redact import redact_query

#: The levels an operator can choose, by name (``[server] log_level``, ``AIOSVC_LOG_LEVEL``).
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: Writes the canonical line of one request: request id, method, path (as sent), route,
#: status, duration in ms, remote address.
AccessLine = Callable[[str, str, str, str | None, int, float, str | None], None]


_access_logger = structlog.get_logger("aiosvc.access")


def request_fields(
    request_id: str,
    method: str,
    path: str,
    route: str | None,
    status: int,
    duration_ms: float,
    remote: str | None,
) -> dict[str, Any]:
    """The fields of a request's line, whichever way it is written: the path as sent, with
    the values of credentials in its query redacted (a token or ticket may ride there)."""
    # One dict display, positional arguments: this runs for every request.
    return {
        "request_id": request_id,
        "method": method,
        "path": redact_query(path) if "=" in path else path,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "remote": remote,
    }


def _structlog_access(level: str) -> AccessLine:
    def line(*fields: Any) -> None:
        # looked up per line: the logger follows the configuration in force (tests capture it)
        getattr(_access_logger, level)("request", **request_fields(*fields))

    return line


def _no_access(*fields: object) -> None:
    pass


def _json_access(stream: Any, level: str) -> AccessLine:
    """Request lines go into the (buffered) stream, which is flushed once the event loop's
    current turn is done: a busy loop handles several requests a turn and writes their lines
    with one system call (one per line cost as much as the rest of the line), and a line is
    never held back longer than the turn that wrote it. Other log lines share the buffer and
    flush it, so lines never come out of order."""
    write, flush = stream.write, stream.flush
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    flush_due = False

    def flush_now() -> None:
        nonlocal flush_due
        flush_due = False
        flush()

    def line(*given: Any) -> None:  # the fields in AccessLine's order
        nonlocal flush_due
        # Item assignments, not keywords: this runs for every request.
        fields = request_fields(*given)
        fields["event"] = "request"
        fields["level"] = level
        fields["logger"] = "aiosvc.access"
        fields["timestamp"] = utcnow()
        try:
            data = dumps(fields, option=option)
        except TypeError:  # lone surrogates: only aiohttp's pure-Python parser lets them in
            fields["path"] = fields["path"].encode("utf-8", "backslashreplace").decode()
            data = dumps(fields, option=option)
        write(data)
        if not flush_due:
            try:
                asyncio.get_running_loop().call_soon(flush_now)
                flush_due = True
            except RuntimeError:  # no event loop: no turn to wait for
                flush()

    return line


class AccessLog:
    """The request lines of the routes logged at one level.

    The front door picks a route's AccessLog when the route is registered and calls its
    :attr:`write` for each request; configuring the log and setting its level swap
    ``write`` (for a writer of the format, or for nothing below the level), so choosing the
    level costs nothing per request.
    """

    def __init__(self, level: str) -> None:
        self.level = level
        self.write: AccessLine = _structlog_access(level)

    def apply(self, numeric: int, json_to: Stderr | None) -> None:
        """Write at the level ``numeric`` from now on: as JSON into ``json_to`` (a buffered
        stderr), or through structlog when it is None (console lines, tests)."""
        if LEVELS[self.level] < numeric:
            self.write = _no_access
            return
        json = json_to is not None
        self.write = _json_access(json_to, self.level) if json else _structlog_access(self.level)


#: Request lines at info (most routes) and at debug (polled ones: health, metrics).
ACCESS_LOGS = {"info": AccessLog("info"), "debug": AccessLog("debug")}


def access_log(level: str) -> AccessLog:
    """The request lines written at ``level`` (``info`` or ``debug``)."""
    return ACCESS_LOGS[level]

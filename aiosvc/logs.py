"""Logging: structlog for our own lines, with the stdlib loggers (aiohttp's) in the same format."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, BinaryIO, Literal, cast
from urllib.parse import unquote_plus

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from aiosvc.clock import utcnow
from aiosvc.log_output import Stderr, TextStderr, buffer_stderr

REDACTED = "[redacted]"
SECRET_KEYS = frozenset({"api_key", "token", "ticket", "authorization", "password"})
URL_KEYS = frozenset({"path", "query", "url"})
SECRET_PARAMS = frozenset({"token", "ticket", "api_key"})


def redact_query(text: str, *, whole: bool = False) -> str:
    """``text`` with the values of token/ticket/api_key query parameters replaced.

    ``text`` is a URL or a path with an optional ``?query``; with ``whole`` it may also be a
    bare query string.
    """
    head, sep, query = text.partition("?")
    if not sep:
        if not whole:
            return text
        head, query = "", text
    query, hash_, fragment = query.partition("#")
    params = []
    for param in query.split("&"):  # "&" only: that is how aiohttp (yarl) splits a query
        name, eq, _value = param.partition("=")
        # compare the decoded name: the server would accept "%74oken=" as "token=" too
        if eq and unquote_plus(name).strip().lower() in SECRET_PARAMS:
            param = f"{name}={REDACTED}"
        params.append(param)
    return head + sep + "&".join(params) + hash_ + fragment


HEADER_KEYS = frozenset({"headers"})
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
_WATCHED = SECRET_KEYS | URL_KEYS | HEADER_KEYS


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: hide secret values (api_key, token, ...) and secret query parameters.

    Log keys are snake_case by convention, so a set intersection finds the few that matter:
    every request writes a line, and this keeps the common case to one C-level operation.
    """
    for key in _WATCHED.intersection(event_dict):
        value = event_dict[key]
        if key in SECRET_KEYS:
            event_dict[key] = REDACTED
        elif key in HEADER_KEYS and isinstance(value, Mapping):
            event_dict[key] = {
                name: REDACTED if str(name).lower() in SECRET_HEADERS else item
                for name, item in value.items()
            }
        elif isinstance(value, str) and "=" in value:
            event_dict[key] = redact_query(value, whole=key == "query")
    return event_dict


#: The id of the request being handled, set by the web layer's front door.
request_id: ContextVar[str] = ContextVar("request_id", default="")


def add_request_id(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: the current request's id, when there is one."""
    rid = request_id.get()
    if rid:
        event_dict.setdefault("request_id", rid)
    return event_dict


def add_timestamp(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: ``timestamp`` as RFC 3339 UTC with milliseconds, like the API's times.

    structlog's TimeStamper formats a datetime on every line, which cost more than the rest
    of a request line together; :func:`utcnow` formats the date and time once a second.
    """
    event_dict["timestamp"] = utcnow()
    return event_dict


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # BytesLogger keeps the name given to structlog.get_logger(__name__)
    name = getattr(logger, "name", None)
    if name and "logger" not in event_dict:
        event_dict["logger"] = name
    return event_dict


def _dumps_str(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, **kwargs).decode()


def _encode(logger: WrappedLogger, method_name: str, event_dict: Any) -> bytes:
    return str(event_dict).encode()


def _stderr_is_tty() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(callable(isatty) and isatty())


#: The levels an operator can choose, by name (``[server] log_level``, ``AIOSVC_LOG_LEVEL``).
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _numeric(level: str) -> int:
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    return numeric


def configure_logging(fmt: Literal["json", "console"] | None, level: str = "info") -> None:
    """Send structlog and stdlib logging to stderr as JSON lines or console lines.

    ``fmt=None`` picks JSON unless stderr is a terminal. Calling it again reconfigures; the
    level can also change later, alone, with :func:`set_level`.
    """
    global _format
    if fmt is None:
        fmt = "console" if _stderr_is_tty() else "json"
    numeric = _numeric(level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        add_timestamp,
        redact_secrets,
    ]
    text_renderer: Processor
    if fmt == "json":
        tail: list[Processor] = [structlog.processors.format_exc_info]
        # OPT_NON_STR_KEYS: a dict with int keys in a log call must not crash the caller
        option = orjson.OPT_NON_STR_KEYS
        renderer: Processor = structlog.processors.JSONRenderer(orjson.dumps, option=option)
        text_renderer = structlog.processors.JSONRenderer(_dumps_str, option=option)
        final: list[Processor] = [renderer]
    else:
        tail = []
        text_renderer = structlog.dev.ConsoleRenderer(colors=_stderr_is_tty())
        final = [text_renderer, _encode]  # BytesLogger wants bytes; it keeps the logger name
    buffered = buffer_stderr()
    binary, text = buffered if buffered is not None else (None, None)
    structlog.configure(
        processors=[*shared[:2], _add_logger_name, *shared[2:], *tail, *final],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # BytesLogger only writes and flushes, all a Stderr does
        logger_factory=structlog.BytesLoggerFactory(cast(BinaryIO, binary))
        if binary is not None
        else structlog.WriteLoggerFactory(sys.stderr),
        # Not cached: a logger cached on first use keeps the level it was made with, and the
        # level can change while the service runs (set_level). A line costs about 1 us more.
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(shared, tail, text_renderer, numeric, text)
    _format = (fmt, binary)
    _apply_level(numeric)


def set_level(level: str) -> None:
    """Change the log level of the running process (``debug``, ``info``, ...), request lines
    included, keeping the format."""
    numeric = _numeric(level)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(numeric))
    logging.getLogger().setLevel(numeric)
    _apply_level(numeric)


def current_level() -> str:
    """The name of the level in force (as :func:`set_level` takes it)."""
    numeric = logging.getLogger().level
    return next(
        (name for name, n in LEVELS.items() if n == numeric), logging.getLevelName(numeric).lower()
    )


# The per-request line -------------------------------------------------------------------------
#
# Every request writes one line, so its cost is paid on every request: through structlog's
# bound logger and processor chain it took about 30 us, several times what the rest of a small
# request's front door costs. In JSON mode the line is therefore written directly, with the
# same fields a structlog line has (event, level, logger, timestamp, the request id) and the
# same redaction. Console mode and tests (with structlog's capture) keep going through structlog.


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

    def line(*given: Any) -> None:
        nonlocal flush_due
        fields = request_fields(*given)
        fields.update(event="request", level=level, logger="aiosvc.access", timestamp=utcnow())
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
    :attr:`write` for each request; :func:`configure_logging` and :func:`set_level` swap
    ``write`` (for a writer of the format, or for nothing below the level), so choosing the
    level costs nothing per request.
    """

    def __init__(self, level: str) -> None:
        self.level = level
        self.write: AccessLine = _structlog_access(level)

    def _apply(self, numeric: int) -> None:
        if LEVELS[self.level] < numeric:
            self.write = _no_access
            return
        fmt, binary = _format
        json = fmt == "json" and binary is not None
        self.write = _json_access(binary, self.level) if json else _structlog_access(self.level)


#: Request lines at info (most routes) and at debug (polled ones: health, metrics).
ACCESS_LOGS = {"info": AccessLog("info"), "debug": AccessLog("debug")}
_format: tuple[str, Stderr | None] = ("console", None)


def access_log(level: str) -> AccessLog:
    """The request lines written at ``level`` (``info`` or ``debug``)."""
    return ACCESS_LOGS[level]


def _apply_level(numeric: int) -> None:
    global access
    for channel in ACCESS_LOGS.values():
        channel._apply(numeric)
    access = ACCESS_LOGS["info"].write


#: Write the canonical line of one request at info (replaced by :func:`configure_logging`).
access: AccessLine = ACCESS_LOGS["info"].write


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the root handler this module installed, so reconfiguring replaces only it."""


def _configure_stdlib(
    shared: list[Processor],
    tail: list[Processor],
    renderer: Processor,
    level: int,
    text: TextStderr | None,
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared[:2], structlog.stdlib.add_logger_name, *shared[2:]],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = _Handler(text or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log only repeats our own per-request line (which redacts query strings)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters (messages' text) at debug
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger that names ``name`` in its lines."""
    return cast(FilteringBoundLogger, structlog.get_logger(name))

"""Logging: structlog for our own lines, with the stdlib loggers (aiohttp's) in the same format.

This module configures it all (format, level); beside it: :mod:`~aiosvc.logs.processors` (the
fields every line carries), :mod:`~aiosvc.logs.redact` (secrets kept out),
:mod:`~aiosvc.logs.request_lines` (each request's canonical line, the hot path),
:mod:`~aiosvc.logs.output` (the buffered stderr) and :mod:`~aiosvc.logs.throttle` (lines that
come in storms).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO, Literal, cast

import orjson
import structlog
from structlog.typing import FilteringBoundLogger, Processor, WrappedLogger

from aiosvc.logs.output import Stderr, TextStderr, buffer_stderr
from aiosvc.logs.processors import add_logger_name, add_request_id, add_timestamp, request_id
from aiosvc.logs.redact import REDACTED, redact_query, redact_secrets
from aiosvc.logs.request_lines import (
    ACCESS_LOGS,
    LEVELS,
    AccessLine,
    AccessLog,
    access_log,
    request_fields,
)

__all__ = [
    "ACCESS_LOGS",
    "LEVELS",
    "REDACTED",
    "AccessLog",
    "access",
    "access_log",
    "configure_logging",
    "current_level",
    "get_logger",
    "redact_query",
    "redact_secrets",
    "request_fields",
    "request_id",
    "set_level",
]


def _dumps_str(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, **kwargs).decode()


def _encode(logger: WrappedLogger, method_name: str, event_dict: Any) -> bytes:
    return str(event_dict).encode()


def _stderr_is_tty() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(callable(isatty) and isatty())


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
        processors=[*shared[:2], add_logger_name, *shared[2:], *tail, *final],
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


#: The format in force and, in JSON, the buffered stderr request lines go to.
_format: tuple[str, Stderr | None] = ("console", None)


def _apply_level(numeric: int) -> None:
    global access
    fmt, binary = _format
    for channel in ACCESS_LOGS.values():
        channel.apply(numeric, binary if fmt == "json" else None)
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

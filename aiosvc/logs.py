"""Logging: structlog for our own lines, with the stdlib loggers (aiohttp's) in the same format."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, cast
from urllib.parse import unquote_plus

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

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


def _redact(mapping: MutableMapping[Any, Any]) -> None:
    for key, value in mapping.items():
        name = key.lower() if isinstance(key, str) else key
        if name in SECRET_KEYS:
            mapping[key] = REDACTED
        elif name in URL_KEYS and isinstance(value, str):
            mapping[key] = redact_query(value, whole=name == "query")
        elif isinstance(value, dict):  # e.g. headers=..., a secret one level down
            mapping[key] = value = dict(value)
            _redact(value)


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: hide secret values (api_key, token, ...) and secret query parameters."""
    _redact(event_dict)
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


def configure_logging(fmt: Literal["json", "console"] | None, level: str = "info") -> None:
    """Send structlog and stdlib logging to stderr as JSON lines or console lines.

    ``fmt=None`` picks JSON unless stderr is a terminal. Calling it again reconfigures, but
    loggers already used keep their first configuration (``cache_logger_on_first_use``).
    """
    if fmt is None:
        fmt = "console" if _stderr_is_tty() else "json"
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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
    binary = getattr(sys.stderr, "buffer", None)
    structlog.configure(
        processors=[*shared[:2], _add_logger_name, *shared[2:], *tail, *final],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(binary)
        if binary is not None
        else structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configure_stdlib(shared, tail, text_renderer, numeric)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the root handler this module installed, so reconfiguring replaces only it."""


def _configure_stdlib(
    shared: list[Processor], tail: list[Processor], renderer: Processor, level: int
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared[:2], structlog.stdlib.add_logger_name, *shared[2:]],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = _Handler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log only repeats our own per-request line (which redacts query strings)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger that names ``name`` in its lines."""
    return cast(FilteringBoundLogger, structlog.get_logger(name))

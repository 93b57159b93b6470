"""The fields every line carries beyond its own: the request's id, the time, the logger's name."""

from __future__ import annotations

from contextvars import ContextVar

from structlog.typing import EventDict, WrappedLogger

from aiosvc.clock import utcnow

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


def add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: ``logger``, the name given to ``structlog.get_logger``."""
    # BytesLogger keeps the name given to structlog.get_logger(__name__)
    name = getattr(logger, "name", None)
    if name and "logger" not in event_dict:
        event_dict["logger"] = name
    return event_dict

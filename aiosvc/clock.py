"""Wall-clock time as the API writes it: RFC 3339, UTC, millisecond precision, ``Z`` suffix."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> str:
    """Return the current time as an RFC 3339 UTC string such as ``2026-11-22T03:23:03.123Z``."""
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with milliseconds and a ``Z`` suffix."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse a time written by :func:`format_time` back into an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))

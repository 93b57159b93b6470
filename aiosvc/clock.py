"""Wall-clock time as the API writes it: RFC 3339, UTC, millisecond precision, ``Z`` suffix."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def utcnow() -> str:
    """Return the current time as an RFC 3339 UTC string such as ``2026-11-22T03:23:03.123Z``."""
    # Several times are stamped per message: format the date and time once per second.
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with milliseconds and a ``Z`` suffix."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

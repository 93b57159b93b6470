"""Wall-clock time as the API writes it: RFC 3339, UTC, millisecond precision, ``Z`` suffix."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text
_milli: tuple[int, str] = (-1, "")  # the last millisecond formatted, and its text


def utcnow() -> str:
    """Return the current time as an RFC 3339 UTC string such as ``2026-11-22T03:23:03.123Z``."""
    # Several times are stamped per message and per request: format the date and time once
    # per second, and the whole text once per millisecond.
    global _second, _milli
    milli = int(time.time() * 1000)
    if milli == _milli[0]:
        return _milli[1]
    whole = milli // 1000
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    _milli = (milli, f"{_second[1]}.{milli - whole * 1000:03d}Z")
    return _milli[1]


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with milliseconds and a ``Z`` suffix."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

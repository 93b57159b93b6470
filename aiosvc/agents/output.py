"""What agent output may contain: the one place that decides.

An agent's text (deltas, error messages, tool names and inputs) is stored, published as JSON
and read back by every client. Any Unicode text is allowed except the two things that cannot
make that round trip: NUL (refused by the API's own validation, and by many C programs that
read the database) and lone surrogates (not encodable as UTF-8, so not as JSON). Each becomes
U+FFFD, the replacement character, as a decoder does for bytes it cannot read. Other control
characters (escape sequences included) are kept: they are the clients' to show safely.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD."""
    return _UNSAFE.sub(REPLACEMENT, text) if _UNSAFE.search(text) else text


def clean_value(value: Any) -> Any:
    """A JSON-like value with every string in it (keys too) passed through :func:`clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(v) for v in value]
    return value

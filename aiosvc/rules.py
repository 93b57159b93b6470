"""What the API accepts, in one place: the lengths, patterns and counts that the command
handlers and the web layer check and the OpenAPI document states, with the words of each
check's error. Limits an operator sets (a title's or a message's length, a page's size) are
in the configuration's ``[limits]``; the checks read them from there."""

from __future__ import annotations

import re

#: A session's project: this many characters at least, and at most.
MIN_PROJECT_CHARS = 1
MAX_PROJECT_CHARS = 200
#: A text filter of a list (``?project=``, ``?computer=``): 1 to this many characters.
MAX_FILTER_CHARS = 200

#: A tool's name in an external approval: 1 to this many characters.
MAX_TOOL_CHARS = 200
#: How long an external approval may wait for a person, at most (seconds).
MAX_EXTERNAL_TIMEOUT_S = 3600.0
#: A session's model name: 1 to this many characters; its system prompt: at most this many.
MAX_MODEL_CHARS = 200
MAX_SYSTEM_PROMPT_CHARS = 65_536

#: The ``<type>`` of a hook event (published as ``hook.<type>``).
HOOK_TYPE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
HOOK_TYPE_ERROR = "expected 1 to 64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"

#: Topics one subscription names at most (a WebSocket op, an event stream's ``?topics=``).
MAX_TOPICS = 256
#: The topics a client may name, as errors and the document say them.
TOPICS = (
    "'sessions', 'approvals', 'hooks', 'projects', 'computers', 'system', '*' or 'session:<id>'"
)


def length_error(low: int, high: int) -> str:
    """What a text of the wrong length is told: ``low`` to ``high`` characters (``low`` 0:
    at most ``high``)."""
    if low <= 0:
        return f"must be at most {high} characters"
    return f"must be {low} to {high} characters"

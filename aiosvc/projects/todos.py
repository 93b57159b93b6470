"""A ``TODO.md`` checklist read as todo items: ``- [ ] text`` open, ``- [x] text`` done.

Plain text in, items out, no I/O: whatever the file holds (binary, CRLF, one line of
megabytes, no final newline) parses in time linear in its size, since the only pattern is
anchored at a line's start and has no nested repetition; the text is cut in Python, not by
the pattern.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import NamedTuple

import attrs

#: An item: at a line's start, any indentation, a bullet (``-``, ``*`` or ``+``), a box with
#: a space, ``x`` or ``X`` in it, then at least one blank and the text (the rest of the line).
ITEM = re.compile(r"^[ \t]*[-*+][ \t]+\[([ xX])\][ \t]+(.*)$", re.MULTILINE)
#: An item's text longer than this (in characters) is cut there and ends with ``…``.
MAX_TEXT_CHARS = 2000


@attrs.frozen(kw_only=True)
class Todo:
    """One checklist item of a project's ``TODO.md``."""

    id: str
    project: str
    text: str
    done: bool
    line: int  # 1-based


def todo_id(project: str, text: str, occurrence: int) -> str:
    """An item's id: the same while its project and text are the same, wherever the item moves
    and whether it is ticked or not (the ``occurrence``-th item of that text, from 0)."""
    digest = hashlib.sha256(f"{project}\0{text}\0{occurrence}".encode()).hexdigest()
    return f"todo_{digest[:20]}"


class Item(NamedTuple):
    """An item as found, before it is given its project and id (a file may hold hundreds of
    thousands: they are made into :class:`Todo` only for the page that is shown)."""

    text: str
    done: bool
    line: int
    occurrence: int  # how many items before it have the same (whole) text
    full_text: str

    def todo(self, project: str) -> Todo:
        """The item as clients see it."""
        return Todo(
            id=todo_id(project, self.full_text, self.occurrence),
            project=project,
            text=self.text,
            done=self.done,
            line=self.line,
        )


def scan(data: bytes | str) -> list[Item]:
    """Every checklist item of a ``TODO.md`` (bytes are read as UTF-8; what is not UTF-8
    becomes U+FFFD), in the file's order."""
    text = data.decode("utf-8-sig", errors="replace") if isinstance(data, bytes) else data
    found: list[Item] = []
    seen: Counter[str] = Counter()
    line, at = 1, 0
    for match in ITEM.finditer(text):
        line += text.count("\n", at, match.start())
        at = match.start()
        body = match.group(2).rstrip(" \t\r")  # CRLF: the \r stays on the line before \n
        if not body:
            continue
        occurrence = seen[body]
        seen[body] += 1
        shown = body if len(body) <= MAX_TEXT_CHARS else body[: MAX_TEXT_CHARS - 1] + "…"
        found.append(Item(shown, match.group(1) != " ", line, occurrence, body))
    return found


def parse(project: str, data: bytes | str) -> list[Todo]:
    """Every checklist item of a ``TODO.md`` as todos of ``project``, in the file's order."""
    return [item.todo(project) for item in scan(data)]

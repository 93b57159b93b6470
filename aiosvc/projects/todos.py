"""A ``TODO.md`` checklist read as todo items: ``- [ ] text`` open, ``- [x] text`` done.

Bytes in, items out, no I/O: whatever the file holds (binary, CRLF, one line of megabytes, no
final newline) parses in time linear in its size, since the only pattern is anchored at a
line's start and has no nested repetition; the text's end is found in Python, not by the
pattern.

A file may hold hundreds of thousands of items, so a :class:`Checklist` keeps the file's bytes
and, per item, a few integers in arrays (about 17 bytes an item, against some 200 for a tuple
of Python objects); an item becomes a :class:`Todo` only when a page shows it.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections import Counter

import attrs

#: An item: at a line's start, any indentation, a bullet (``-``, ``*`` or ``+``), a box with
#: a space, ``x`` or ``X`` in it, then at least one blank and the text (the rest of the line).
ITEM = re.compile(rb"^[ \t]*[-*+][ \t]+\[([ xX])\][ \t]+(.*)$", re.MULTILINE)
#: An item's text longer than this (in characters) is cut there and ends with ``…``.
MAX_TEXT_CHARS = 2000
BOM = b"\xef\xbb\xbf"


@attrs.frozen(kw_only=True)
class Todo:
    """One checklist item of a project's ``TODO.md``."""

    id: str
    project: str
    text: str
    done: bool
    line: int  # 1-based


def todo_id(project: str, text: str | bytes, occurrence: int) -> str:
    """An item's id: the same while its project and text are the same, wherever the item moves
    and whether it is ticked or not (the ``occurrence``-th item of that text, from 0)."""
    raw = text.encode() if isinstance(text, str) else text
    digest = hashlib.sha256(b"%s\0%s\0%d" % (project.encode(), raw, occurrence)).hexdigest()
    return f"todo_{digest[:20]}"


class Checklist:
    """The items of one ``TODO.md``, in the file's order (read as UTF-8: what is not UTF-8
    becomes U+FFFD when shown)."""

    def __init__(self, data: bytes) -> None:
        # (a search from an offset would not match ^ there: the BOM is cut off instead)
        self._data = data = data[len(BOM) :] if data.startswith(BOM) else data
        self._starts = array("I")  # where each item's text starts in the data
        self._ends = array("I")  # and where it ends (trailing blanks and \r left out)
        self._lines = array("I")
        self._done = array("B")
        self._occurrences = array("I")  # how many items before it have the same text
        #: The positions (in the file's items) of those not done.
        self.open = array("I")
        seen: Counter[bytes] = Counter()
        line, at = 1, 0
        for match in ITEM.finditer(data):
            line += data.count(b"\n", at, match.start())
            at = match.start()
            body = match.group(2).rstrip(b" \t\r")  # CRLF: the \r stays before the \n
            if not body:
                continue
            if match.group(1) == b" ":
                self.open.append(len(self._starts))
            self._done.append(match.group(1) != b" ")
            self._starts.append(match.start(2))
            self._ends.append(match.start(2) + len(body))
            self._lines.append(line)
            self._occurrences.append(seen[body])
            seen[body] += 1

    def __len__(self) -> int:
        return len(self._starts)

    def todo(self, project: str, index: int) -> Todo:
        """The ``index``-th item (from 0) as a todo of ``project``."""
        raw = self._data[self._starts[index] : self._ends[index]]
        # decoding at most 4 bytes a character of what is shown, not the whole of a huge line
        text = raw[: 4 * MAX_TEXT_CHARS + 4].decode("utf-8", errors="replace")
        if len(text) > MAX_TEXT_CHARS:
            text = text[: MAX_TEXT_CHARS - 1] + "…"
        return Todo(
            id=todo_id(project, raw, self._occurrences[index]),
            project=project,
            text=text,
            done=bool(self._done[index]),
            line=self._lines[index],
        )

    def page(
        self, project: str, *, include_done: bool, limit: int, offset: int
    ) -> tuple[list[Todo], int]:
        """One page of the items (open ones only unless ``include_done``), and how many there
        are in all."""
        if include_done:
            shown = range(offset, min(offset + limit, len(self)))
            return [self.todo(project, i) for i in shown], len(self)
        chosen = self.open[offset : offset + limit]
        return [self.todo(project, i) for i in chosen], len(self.open)


def parse(project: str, data: bytes | str) -> list[Todo]:
    """Every checklist item of a ``TODO.md`` as todos of ``project``, in the file's order."""
    checklist = Checklist(data.encode() if isinstance(data, str) else data)
    return [checklist.todo(project, i) for i in range(len(checklist))]

"""What a list page asks for and what it answers, for histories and session lists alike.

A page starts at an ``offset`` or at a cursor, the id of an item of the list: ``after`` it
(the items that follow it in the list's order) or ``before`` it (those that precede it, still
in the list's order). ``next`` and ``prev`` name the cursors of the neighbouring pages.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs


@attrs.frozen(kw_only=True)
class Window:
    """The page a client asked for: ``limit`` items from ``offset``, or next to a cursor."""

    limit: int
    offset: int = 0
    after: str | None = None
    before: str | None = None

    @property
    def by_cursor(self) -> bool:
        """Tell whether the page starts at a cursor rather than an offset."""
        return self.after is not None or self.before is not None


@attrs.frozen(kw_only=True)
class Page:
    """One page: its items' JSON in the list's order, and where it stands in the list."""

    items: Sequence[bytes]
    #: Items in the whole list (every page), counted in memory.
    total: int
    #: The first item's position, or None for a page asked for by cursor (knowing it would
    #: mean counting the items before it).
    offset: int | None
    #: The cursor of the following page (``after=``): the last item's id, None at the end.
    next: str | None
    #: The cursor of the preceding page (``before=``): the first item's id, None at the start.
    prev: str | None

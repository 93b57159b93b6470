"""Pages of sessions' histories: read from SQLite by index, recent pages kept within a budget.

A history is never loaded whole: each page is one indexed query (:mod:`aiosvc.store.pages`)
on the database's read thread, which also builds each message's JSON, so a page costs the
event loop next to nothing. The pages read recently are kept (their JSON, exactly sized) in
one least-recently-read order bounded in bytes; every change to a session's messages drops
that session's pages (synchronously, as the change is published, so once a write's answer is
sent no read sees the page from before it). A page read while its session changed is
answered but not kept. A streaming reply shows its text so far, taken from the live deltas at
each read (or how it ended, when memory knows it before the database).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

import attrs
import orjson

from aiosvc.convert import dumps, right_sized
from aiosvc.errors import InvalidParameter
from aiosvc.models import Message, MessageStatus
from aiosvc.paging import Page, Window
from aiosvc.store import Span, Store

#: What a kept page costs beyond its items' JSON, and what each item costs beyond its JSON:
#: the records, the id, the key and the order's node (measured, see tests/test_history.py).
PAGE_OVERHEAD = 400
ITEM_OVERHEAD = 256

Key = tuple[str, str, int | str, int]  # session id, how the page starts, offset or cursor, limit
Item = tuple[str, str, bytes]  # message id, status, JSON


@attrs.frozen
class _Kept:
    items: tuple[Item, ...]
    more_before: bool
    more_after: bool
    cost: int


class _Read:
    """A page being read; marked stale when its session changes meanwhile."""

    __slots__ = ("stale",)

    def __init__(self) -> None:
        self.stale = False


class Histories:
    """History pages for readers, from the store, the recent ones kept."""

    def __init__(
        self, store: Store, shown: Callable[[str], str | Message | None], *, max_bytes: int
    ) -> None:
        self._store = store
        #: What memory knows of a message whose row streams: its text so far, or its end.
        self._memory = shown
        self.max_bytes = max_bytes
        self._pages: OrderedDict[Key, _Kept] = OrderedDict()  # least recently read first
        self._by_session: dict[str, set[Key]] = {}
        self._reading: dict[str, list[_Read]] = {}
        self._bytes = 0

    @property
    def kept(self) -> tuple[int, int]:
        """How many pages are kept, and their cost in bytes."""
        return len(self._pages), self._bytes

    async def page(self, session_id: str, total: int, window: Window) -> Page:
        """One page of a session's history, oldest first; ``total`` is its message count.

        A cursor that is not a message of this session is ``400 invalid_parameter``.
        """
        key = _key(session_id, window)
        kept = self._pages.get(key)
        if kept is not None:
            self._pages.move_to_end(key)
        else:
            kept = await self._read(session_id, key, window, total)
        items = [await self._shown(item) for item in kept.items]
        return Page(
            items=items,
            total=total,
            offset=None if window.by_cursor else window.offset,
            next=kept.items[-1][0] if kept.items and kept.more_after else None,
            prev=kept.items[0][0] if kept.items and kept.more_before else None,
        )

    async def _read(self, session_id: str, key: Key, window: Window, total: int) -> _Kept:
        read = _Read()
        reading = self._reading.setdefault(session_id, [])
        reading.append(read)
        try:
            span = await self._span(session_id, window, total)
            found = await self._store.message_json(session_id, span)
            items = tuple([item async for item in self._items(found.rows)])
        finally:
            reading.remove(read)
            if not reading:
                del self._reading[session_id]
        cost = PAGE_OVERHEAD + sum(len(item[2]) + ITEM_OVERHEAD for item in items)
        kept = _Kept(items, found.more_before, found.more_after, cost)
        if not read.stale:
            self._keep(session_id, key, kept)
        return kept

    async def _items(self, rows: list[sqlite3.Row]) -> AsyncIterator[Item]:
        """The page's items from its rows (their JSON built by the database); a damaged row
        is read on its own, which logs it and leaves it out."""
        for row in rows:
            if row["json"] is not None:  # (the status checked in SQL, shared, not a copy)
                yield row["id"], MessageStatus(row["status"]).value, row["json"]
                continue
            message = await self._store.message(row["id"])
            if message is not None:  # stricter than the model: it reads after all
                yield message.id, message.status.value, right_sized(dumps(message))

    async def _span(self, session_id: str, window: Window, total: int) -> Span:
        """The rows the window names; a cursor must be a message of this session."""
        cursor = window.after if window.after is not None else window.before
        if cursor is None:  # an offset near the end is counted from the end of ``total``
            return Span(limit=window.limit, offset=window.offset, total=total)
        seq = await self._store.message_seq(session_id, cursor)
        if seq is None:
            name = "after" if window.after is not None else "before"
            raise InvalidParameter(name, f"no message {cursor!r} in this session")
        if window.after is not None:
            return Span(limit=window.limit, after=seq)
        return Span(limit=window.limit, before=seq)

    async def _shown(self, item: Item) -> bytes:
        """An item's JSON as it is now: a streaming reply with its text so far."""
        message_id, status, json = item
        if status != MessageStatus.STREAMING:
            return json
        known = self._memory(message_id)
        if isinstance(known, str):
            return orjson.dumps({**orjson.loads(json), "content": known})
        if known is not None:
            return dumps(known)
        # It ended between the read and now (or has no text yet): its row says which.
        message = await self._store.message(message_id)
        return dumps(message) if message is not None else json

    def resize(self, max_bytes: int) -> None:
        """Keep pages within ``max_bytes`` from now on (dropping the least recently read)."""
        self.max_bytes = max_bytes
        self._shrink()

    def _keep(self, session_id: str, key: Key, kept: _Kept) -> None:
        if kept.cost > self.max_bytes:
            return
        self._drop(key)
        self._pages[key] = kept
        self._by_session.setdefault(session_id, set()).add(key)
        self._bytes += kept.cost
        self._shrink()

    def _shrink(self) -> None:
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._pages)))

    def _drop(self, key: Key) -> None:
        kept = self._pages.pop(key, None)
        if kept is None:
            return
        self._bytes -= kept.cost
        keys = self._by_session[key[0]]
        keys.discard(key)
        if not keys:
            del self._by_session[key[0]]

    def changed(self, session_id: str) -> None:
        """A message of this session changed: its kept pages go, reads under way are stale."""
        for read in self._reading.get(session_id, ()):
            read.stale = True
        for key in list(self._by_session.get(session_id, ())):
            self._drop(key)

    def clear(self) -> None:
        """Forget every kept page."""
        for reads in self._reading.values():
            for read in reads:
                read.stale = True
        self._pages.clear()
        self._by_session.clear()
        self._bytes = 0

    async def messages(self, session_id: str) -> list[Message]:
        """A session's whole history, oldest first, read a page at a time; a streaming reply
        shows its text so far."""
        history: list[Message] = []
        async for page in self._store.history(session_id):
            for message in page:
                if message.status is MessageStatus.STREAMING:
                    known = self._memory(message.id)
                    if isinstance(known, str):
                        message = attrs.evolve(message, content=known)
                    elif known is not None:
                        message = known
                history.append(message)
        return history


def _key(session_id: str, window: Window) -> Key:
    if window.after is not None:
        return (session_id, "after", window.after, window.limit)
    if window.before is not None:
        return (session_id, "before", window.before, window.limit)
    return (session_id, "offset", window.offset, window.limit)

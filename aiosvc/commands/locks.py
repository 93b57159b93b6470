"""Per-session locks that exist only while someone holds or waits for one.

A lock nobody holds or waits for protects nothing, so it is dropped at once and made again
when next wanted: sessions come and go (deleted, or named by a client that made up an id), and
their locks must not stay behind in memory.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holding it, or waiting for it


class KeyedLocks:
    """``async with locks.hold(key):`` serialises everything done under one key."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """How many keys have a lock now (held or waited for)."""
        return len(self._entries)

    def hold(self, key: str) -> Held:
        """The context that holds ``key``'s lock (waiting for it first)."""
        return Held(self, key)

    def locked(self, key: str) -> bool:
        """Tell whether someone holds ``key``'s lock."""
        entry = self._entries.get(key)
        return entry is not None and entry.lock.locked()

    def _enter(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        return entry

    def _leave(self, key: str, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0 and self._entries.get(key) is entry:
            del self._entries[key]


class Held:
    """One use of a key's lock: entered with ``async with``."""

    __slots__ = ("_entry", "_key", "_locks")

    def __init__(self, locks: KeyedLocks, key: str) -> None:
        self._locks = locks
        self._key = key
        self._entry: _Entry | None = None

    async def __aenter__(self) -> None:
        entry = self._locks._enter(self._key)
        try:
            await entry.lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._locks._leave(self._key, entry)
            raise
        self._entry = entry

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entry = self._entry
        assert entry is not None
        self._entry = None
        entry.lock.release()
        self._locks._leave(self._key, entry)

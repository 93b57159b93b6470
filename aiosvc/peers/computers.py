"""The computers ``GET /api/v1/computers`` lists: this machine, always first and online, then
each peer as its link last saw it.

A peer's link (:class:`aiosvc.peers.link.PeerLink`) gives its own :class:`Computer` through
:meth:`Computers.add`, and is dropped with :meth:`Computers.remove` when a reload takes its
``[peers.NAME]`` away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import attrs

from aiosvc import __version__
from aiosvc.cache import Cache
from aiosvc.clock import utcnow
from aiosvc.models import ErrorInfo

#: The topic of ``computer.online`` and ``computer.offline``.
COMPUTERS_TOPIC = "computers"


@attrs.frozen(kw_only=True)
class Computer:
    """A machine whose sessions this daemon lists."""

    name: str
    #: Where its API is: for this machine, the address the request reached it at.
    url: str
    local: bool
    status: Literal["online", "offline"]
    #: When it last answered (this machine: now); null if it never has.
    last_seen_at: str | None
    #: Its aiosvc version (null until a peer has answered once).
    version: str | None
    session_count: int
    #: Why an offline peer is offline (null when online, and for this machine).
    error: ErrorInfo | None = None


Describe = Callable[[], Awaitable[Computer]]
"""What a peer's link gives: its computer, asked again if last seen too long ago."""


class Computers:
    """This machine and its peers' links, by name."""

    def __init__(self, cache: Cache, computer: str) -> None:
        self._cache = cache
        self._computer = computer
        self._peers: dict[str, Describe] = {}

    def add(self, name: str, describe: Describe) -> None:
        """List a peer, described by its link whenever the list is read."""
        self._peers[name] = describe

    def remove(self, name: str) -> None:
        """Stop listing a peer."""
        self._peers.pop(name, None)

    def here(self, local_url: str) -> Computer:
        """This machine (reached at ``local_url``)."""
        return Computer(
            name=self._computer,
            url=local_url,
            local=True,
            status="online",
            last_seen_at=utcnow(),
            version=__version__,
            # the cache holds this machine's sessions only (whatever name they were made under)
            session_count=self._cache.count({}),
        )

    async def describe(self, local_url: str) -> list[Computer]:
        """This machine (reached at ``local_url``), then the peers by name (those whose last
        answer is too old asked again, together)."""
        peers = await asyncio.gather(*(self._peers[name]() for name in sorted(self._peers)))
        return [self.here(local_url), *peers]

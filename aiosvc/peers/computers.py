"""The computers ``GET /api/v1/computers`` lists: this machine, always first and online, then
each peer as its link last saw it.

Only this machine is listed today. A peer's link (its client, its last answer, whether it is
reachable) will give its own :class:`Computer` through :meth:`Computers.add`, and be dropped
with :meth:`Computers.remove` when a reload takes its ``[peers.NAME]`` away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs

from aiosvc import __version__
from aiosvc.cache import Cache
from aiosvc.clock import utcnow


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


Describe = Callable[[], Computer]
"""What a peer's link gives: its computer as last seen."""


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

    def describe(self, local_url: str) -> list[Computer]:
        """This machine (reached at ``local_url``), then the peers by name."""
        here = Computer(
            name=self._computer,
            url=local_url,
            local=True,
            status="online",
            last_seen_at=utcnow(),
            version=__version__,
            # the cache holds this machine's sessions only (whatever name they were made under)
            session_count=self._cache.count({}),
        )
        return [here, *(self._peers[name]() for name in sorted(self._peers))]

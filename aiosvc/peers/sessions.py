"""One peer's sessions as this daemon last heard them: kept newest first, each as its JSON
(its ``computer`` set to the peer's name) and the few fields a list filters and orders by.

The list lives within a byte budget (its share of ``[cache] max_bytes``): each session costs
its JSON plus :data:`ITEM_OVERHEAD` for the objects around it (measured in
``tests/test_peer_sessions.py``). A list that does not fit keeps its newest sessions and says
so once in the log.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs
import orjson
import structlog

from aiosvc.convert import right_sized
from aiosvc.models import is_valid_id

log = structlog.get_logger(__name__)

#: What one kept session costs beyond its JSON: the record, the index entries, the strings.
ITEM_OVERHEAD = 400


@attrs.frozen(slots=True)
class RemoteSession:
    """A peer's session: its JSON (an object, without ``stale``) and what lists need."""

    id: str
    created_at: str
    status: str
    project: str | None
    json: bytes

    def shown(self, stale: bool) -> bytes:
        """Its JSON with ``"stale"`` added (the object's closing brace replaced)."""
        return self.json[:-1] + (b',"stale":true}' if stale else b',"stale":false}')

    @property
    def cost(self) -> int:
        """Bytes it holds in memory, as counted against the budget."""
        return len(self.json) + ITEM_OVERHEAD


def remote_session(data: Any, computer: str) -> RemoteSession | None:
    """A session from a peer's answer, named as ``computer``'s (None: not a session)."""
    if not isinstance(data, dict):
        return None
    session_id, created, status = data.get("id"), data.get("created_at"), data.get("status")
    project = data.get("project")
    if not (isinstance(session_id, str) and is_valid_id(session_id)):
        return None
    if not (isinstance(created, str) and isinstance(status, str)):
        return None
    if project is not None and not isinstance(project, str):
        return None
    data = {**data, "computer": computer}
    data.pop("stale", None)
    return RemoteSession(
        id=sys.intern(session_id),
        created_at=created,
        status=sys.intern(status),
        project=project,
        json=right_sized(orjson.dumps(data)),
    )


class PeerSessions:
    """A peer's sessions, newest first, within ``max_bytes``."""

    def __init__(self, peer: str, max_bytes: int) -> None:
        self.peer = peer
        self.max_bytes = max_bytes
        self._items: dict[str, RemoteSession] = {}  # newest first
        self._counts: Counter[tuple[str, str | None]] = Counter()
        self.bytes = 0
        #: How many times the list changed (what is built from it is current while the same).
        self.changes = 0
        #: Whether the last list given did not fit (its oldest sessions left out).
        self.truncated = False

    def __len__(self) -> int:
        return len(self._items)

    def get(self, session_id: str) -> RemoteSession | None:
        """One of the peer's sessions, or None."""
        return self._items.get(session_id)

    def newest_first(self) -> Iterator[RemoteSession]:
        """Every kept session, newest first."""
        return iter(self._items.values())

    def count(self, filters: Mapping[str, str]) -> int:
        """How many kept sessions match ``status`` and ``project`` (when given)."""
        status, project = filters.get("status"), filters.get("project")
        if status is None and project is None:
            return len(self._items)
        return sum(
            n
            for (s, p), n in self._counts.items()
            if (status is None or s == status) and (project is None or p == project)
        )

    def replace(self, sessions: Iterable[RemoteSession]) -> None:
        """Keep ``sessions`` (newest first) in place of the list, as many as fit."""
        items: dict[str, RemoteSession] = {}
        used = 0
        truncated = False
        for session in sessions:
            if session.id in items:
                continue  # a session moved between two pages of the peer's answer
            if used + session.cost > self.max_bytes:
                truncated = True
                break
            items[session.id] = session
            used += session.cost
        self._items = items
        self._counts = Counter((s.status, s.project) for s in items.values())
        self.bytes = used
        self.changes += 1
        if truncated and not self.truncated:
            log.warning(
                "peer_sessions_truncated", peer=self.peer, kept=len(items), max_bytes=self.max_bytes
            )
        self.truncated = truncated

    def put(self, session: RemoteSession) -> None:
        """Keep a new or changed session (a new one as the newest), if it fits."""
        old = self._items.get(session.id)
        extra = session.cost - (old.cost if old is not None else 0)
        if self.bytes + extra > self.max_bytes:
            return  # the next fetch keeps the newest that fit
        if old is not None:
            self._uncount(old)
            self._items[session.id] = session
        else:
            self._items = {session.id: session, **self._items}
        self._counts[(session.status, session.project)] += 1
        self.bytes += extra
        self.changes += 1

    def _uncount(self, session: RemoteSession) -> None:
        facets = (session.status, session.project)
        self._counts[facets] -= 1
        if self._counts[facets] <= 0:
            del self._counts[facets]

    def remove(self, session_id: str) -> None:
        """Forget a session (deleted on its computer)."""
        session = self._items.pop(session_id, None)
        if session is not None:
            self._uncount(session)
            self.bytes -= session.cost
            self.changes += 1

    def resize(self, max_bytes: int) -> None:
        """Keep within ``max_bytes`` from now on (the oldest sessions dropped to fit)."""
        self.max_bytes = max_bytes
        if self.bytes > max_bytes:
            self.replace(list(self._items.values()))

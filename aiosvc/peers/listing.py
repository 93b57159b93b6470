"""Session lists merged across computers: this machine's sessions (from the cache) and each
peer's (from its kept list), newest first by ``created_at``, paged by offset or by cursor
alike, with the total of every computer's matching sessions.

A peer's session carries ``"stale": true`` while its peer is offline (its list is what the
peer last said), ``false`` otherwise; this machine's sessions carry no ``stale``.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence

from aiosvc.cache import Cache
from aiosvc.errors import InvalidParameter
from aiosvc.paging import Page, Window
from aiosvc.peers.link import PeerLink
from aiosvc.peers.sessions import PeerSessions

#: One listed session: when it was created, its id, its JSON as shown, whether it matches
#: the filters (a cursor may name one that does not: the page starts where it stands).
Item = tuple[str, str, bytes, bool]


def merged_page(
    cache: Cache,
    peers: Sequence[tuple[PeerLink, PeerSessions]],
    filters: Mapping[str, str],
    window: Window,
    *,
    local: bool = True,
) -> Page:
    """A page of the merged list: this machine's sessions (unless ``local`` is False) and
    the given peers', newest first, matching ``status`` and ``project`` when given.

    A cursor that names no session of the listed computers is ``400 invalid_parameter``.
    """
    streams: list[Iterator[Item]] = [_remote(link, kept, filters) for link, kept in peers]
    total = sum(kept.count(filters) for _, kept in peers)
    if local:
        streams.insert(0, _local(cache, filters))
        total += cache.count(filters)
    # each stream is newest first: heapq merges them lazily, taking only what the page needs
    merged = heapq.merge(*streams, key=lambda item: item[0], reverse=True)
    if window.after is not None:
        return _after(merged, window.after, window.limit, total)
    if window.before is not None:
        return _before(merged, window.before, window.limit, total)
    matching = (item for item in merged if item[3])
    shown = list(itertools.islice(matching, window.offset, window.offset + window.limit + 1))
    more = len(shown) > window.limit
    shown = shown[: window.limit]
    return _page(shown, total, window.offset, more_after=more, more_before=window.offset > 0)


def _local(cache: Cache, filters: Mapping[str, str]) -> Iterator[Item]:
    status, project = filters.get("status"), filters.get("project")
    for session, json in cache.newest_first():
        matches = (status is None or session.status == status) and (
            project is None or session.project == project
        )
        yield session.created_at, session.id, json, matches


def _remote(link: PeerLink, kept: PeerSessions, filters: Mapping[str, str]) -> Iterator[Item]:
    status, project = filters.get("status"), filters.get("project")
    stale = not link.online
    for session in kept.newest_first():
        matches = (status is None or session.status == status) and (
            project is None or session.project == project
        )
        # (made lazily: a page reads only the sessions up to its end)
        yield session.created_at, session.id, session.shown(stale), matches


def _after(merged: Iterable[Item], cursor: str, limit: int, total: int) -> Page:
    items = iter(merged)
    for item in items:
        if item[1] == cursor:
            shown = list(itertools.islice((i for i in items if i[3]), limit + 1))
            more = len(shown) > limit
            return _page(shown[:limit], total, None, more_after=more, more_before=True)
    raise InvalidParameter("after", f"no session {cursor!r}")


def _before(merged: Iterable[Item], cursor: str, limit: int, total: int) -> Page:
    kept: deque[Item] = deque(maxlen=limit + 1)
    for item in merged:
        if item[1] == cursor:
            more = len(kept) > limit
            shown = list(kept)[-limit:] if limit else []
            return _page(shown, total, None, more_after=True, more_before=more)
        if item[3]:
            kept.append(item)
    raise InvalidParameter("before", f"no session {cursor!r}")


def _page(
    shown: Sequence[Item], total: int, offset: int | None, *, more_after: bool, more_before: bool
) -> Page:
    return Page(
        items=[item[2] for item in shown],
        total=total,
        offset=offset,
        next=shown[-1][1] if shown and more_after else None,
        prev=shown[0][1] if shown and more_before else None,
    )

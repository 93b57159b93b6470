"""A peer's kept session list: what a peer's answer may hold (hostile items left out), the
``computer`` and ``stale`` it is shown with, and its byte budget (10,000 sessions in a small
budget keep the newest that fit, and the memory really held stays within what is counted)."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson

from aiosvc.peers.sessions import ITEM_OVERHEAD, PeerSessions, RemoteSession, remote_session


def session(n: int, **extra: Any) -> dict[str, Any]:
    """A session as a peer's list shows it."""
    return {
        "id": f"ses_{n:016d}",
        "title": f"session number {n}",
        "agent": "echo",
        "project": "website" if n % 2 else None,
        "computer": "desktop-7",
        "status": "idle",
        "created_at": f"2026-12-01T17:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
        "updated_at": "2026-12-01T17:45:03.512Z",
        "message_count": n % 7,
        "last_message_at": None,
        **extra,
    }


def kept(*items: dict[str, Any]) -> list[RemoteSession]:
    found = [remote_session(item, "desk") for item in items]
    return [s for s in found if s is not None]


def test_a_session_is_renamed_to_its_peer_and_shown_stale_or_not() -> None:
    [one] = kept(session(1, stale=True))
    data = orjson.loads(one.json)
    assert data["computer"] == "desk" and "stale" not in data
    assert orjson.loads(one.shown(True)) == {**data, "stale": True}
    assert orjson.loads(one.shown(False)) == {**data, "stale": False}


def test_what_is_not_a_session_is_left_out() -> None:
    hostile: list[Any] = [
        None,
        "ses_0000000000000001",
        [],
        session(1, id=7),
        session(2, id="../../etc/passwd"),
        session(3, id="x" * 65),
        session(4, created_at=None),
        session(5, status=["idle"]),
        session(6, project={"a": 1}),
    ]
    assert [remote_session(item, "desk") for item in hostile] == [None] * len(hostile)


def test_counts_follow_the_filters_and_a_repeated_id_is_kept_once() -> None:
    sessions = PeerSessions("desk", 1 << 20)
    items = kept(*(session(n) for n in range(10)), session(3))
    sessions.replace(items)
    assert len(sessions) == 10
    assert sessions.count({}) == 10
    assert sessions.count({"project": "website"}) == 5
    assert sessions.count({"status": "idle", "project": "website"}) == 5
    assert sessions.count({"status": "ended"}) == 0
    assert [s.id for s in sessions.newest_first()] == [f"ses_{n:016d}" for n in range(10)]
    changes = sessions.changes
    sessions.replace(items[:2])
    assert (len(sessions), sessions.changes) == (2, changes + 1)
    assert sessions.get(items[5].id) is None


def test_ten_thousand_sessions_stay_within_the_budget() -> None:
    budget = 1 << 20
    items = kept(*(session(n) for n in range(10_000)))
    sessions = PeerSessions("desk", budget)
    sessions.replace(items)
    assert sessions.truncated
    assert sessions.bytes <= budget
    assert len(sessions) == budget // items[0].cost or len(sessions) < 10_000
    # the newest are kept, in order
    assert [s.id for s in sessions.newest_first()] == [s.id for s in items[: len(sessions)]]
    sessions.resize(budget // 2)
    assert sessions.bytes <= budget // 2 and len(sessions) > 0


def test_the_counted_cost_covers_the_memory_really_held() -> None:
    answer = orjson.dumps([session(n) for n in range(2_000)])
    sessions = PeerSessions("desk", 1 << 30)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parsed = orjson.loads(answer)  # as read from the peer: its strings kept are ours
        sessions.replace(kept(*parsed))
        del parsed
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= sessions.bytes, (held, sessions.bytes)
    assert held > sessions.bytes - 2_000 * ITEM_OVERHEAD // 2  # and the count is not far off

"""The statistics' SQL on rows written directly: days at the edges of the range, medians of
odd and even counts, failed replies, and token counts once messages have a ``usage`` column."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from aiosvc.store import Database, Store
from aiosvc.store.stats import AgentStats, DayStats, Totals

TODAY = date(2026, 12, 1)


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    database = Database(db_path)
    await database.open()
    yield Store(database)
    await database.close()


def fill(db_path: Path, *, usage: bool = False) -> None:
    """Sessions of two agents and their messages over a few days around the range's edges."""
    with sqlite3.connect(db_path) as conn:
        existing = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
        if usage and "usage" not in existing:  # (the schema has it since 0006_message_usage)
            conn.execute("ALTER TABLE messages ADD COLUMN usage TEXT")
        for sid, agent, day in [
            ("ses_a", "alpha", "2026-11-29"),
            ("ses_b", "beta", "2026-12-01"),
            ("ses_old", "alpha", "2026-11-20"),  # before a 3-day range
        ]:
            conn.execute(
                "INSERT INTO sessions (id, title, agent, project, computer, status, created_at, "
                "updated_at) VALUES (?, '', ?, NULL, 'here', 'idle', ?, ?)",
                [sid, agent, f"{day}T08:00:00.000Z", f"{day}T08:00:00.000Z"],
            )
        rows = [
            # session, role, status, created, seconds to complete, tokens
            ("ses_old", "assistant", "complete", "2026-11-20T09:00:00.000Z", 100.0, None),
            ("ses_a", "user", "complete", "2026-11-29T23:59:59.999Z", 0.0, None),
            ("ses_a", "assistant", "complete", "2026-11-30T00:00:00.000Z", 1.0, (10, 20)),
            ("ses_a", "assistant", "complete", "2026-11-30T10:00:00.000Z", 3.0, (5, 7)),
            ("ses_a", "assistant", "failed", "2026-11-30T11:00:00.000Z", 50.0, None),
            ("ses_a", "assistant", "complete", "2026-12-01T10:00:00.000Z", 2.0, None),
            ("ses_a", "assistant", "complete", "2026-12-01T11:00:00.000Z", 10.0, (1, 1)),
            ("ses_b", "user", "complete", "2026-12-01T12:00:00.000Z", 0.0, None),
            ("ses_b", "assistant", "complete", "2026-12-01T12:00:01.000Z", 0.5, (100, 200)),
            ("ses_b", "assistant", "cancelled", "2026-12-01T12:00:02.000Z", 1.0, None),
            ("ses_b", "assistant", "streaming", "2026-12-01T12:00:03.000Z", None, None),
            ("ses_b", "user", "complete", "2026-12-02T00:00:00.000Z", 0.0, None),  # tomorrow
        ]
        for n, (sid, role, status, created, seconds, tokens) in enumerate(rows):
            completed = None
            if seconds is not None:
                whole, milli = divmod(int(seconds * 1000), 1000)
                completed = conn.execute(
                    "SELECT strftime('%Y-%m-%dT%H:%M:%S', ?, ?) || ?",
                    [created, f"+{whole} seconds", f".{milli:03d}Z"],
                ).fetchone()[0]
            values = [f"msg_{n}", sid, role, "text", status, created, completed]
            columns = "id, session_id, role, content, status, created_at, completed_at"
            if usage:
                columns += ", usage"
                values.append(
                    None
                    if tokens is None
                    else json.dumps({"input_tokens": tokens[0], "output_tokens": tokens[1]})
                )
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT INTO messages ({columns}) VALUES ({marks})", values)
    conn.close()


async def test_days_replies_failures_and_medians(store: Store, db_path: Path) -> None:
    fill(db_path)
    stats = await store.stats(3, TODAY)
    zero = {"input_tokens": 0, "output_tokens": 0}
    assert stats.per_day == [
        DayStats(date="2026-11-29", sessions=1, messages=1, replies=0, failed=0, **zero),
        DayStats(date="2026-11-30", sessions=0, messages=3, replies=3, failed=1, **zero),
        DayStats(date="2026-12-01", sessions=1, messages=6, replies=5, failed=0, **zero),
    ]
    assert stats.totals == Totals(sessions=2, messages=10, replies=8, failed=1, **zero)
    assert stats.per_agent == [
        # completed in 1, 3, 2 and 10 s: the mean of the middle two
        AgentStats(agent="alpha", replies=5, failed=1, p50_reply_s=2.5),
        # one completed (the cancelled and the streaming ones have no time)
        AgentStats(agent="beta", replies=3, failed=0, p50_reply_s=0.5),
    ]
    one = await store.stats(1, TODAY)
    assert [d.date for d in one.per_day] == ["2026-12-01"]
    assert one.per_agent[0] == AgentStats(agent="alpha", replies=2, failed=0, p50_reply_s=6.0)
    wide = await store.stats(366, TODAY)
    assert len(wide.per_day) == 366 and wide.per_day[0].date == "2025-12-01"
    assert wide.totals.replies == 9
    # an odd count: the middle one (1, 3, 2, 10 and the old one's 100)
    assert wide.per_agent[0] == AgentStats(agent="alpha", replies=6, failed=1, p50_reply_s=3.0)
    empty = await store.stats(5, date(2020, 1, 1))
    assert empty.per_agent == [] and empty.totals == Totals(
        sessions=0, messages=0, replies=0, failed=0, **zero
    )


async def test_tokens_are_summed_once_messages_have_usage(db_path: Path) -> None:
    database = Database(db_path)
    await database.open()
    await database.close()
    fill(db_path, usage=True)  # as a later schema adds it
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE messages SET usage = 'not json' WHERE id = 'msg_4'")
    conn.close()
    database = Database(db_path)
    await database.open()
    try:
        stats = await Store(database).stats(3, TODAY)
    finally:
        await database.close()
    assert [(d.input_tokens, d.output_tokens) for d in stats.per_day] == [
        (0, 0),
        (15, 27),
        (101, 201),
    ]
    assert (stats.totals.input_tokens, stats.totals.output_tokens) == (116, 228)

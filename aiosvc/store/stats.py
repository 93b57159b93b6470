"""Statistics over the last days, counted by SQLite over indexed columns (never by loading rows
into Python), on the database's connection for reports (:meth:`Database.report`).

Days are UTC dates of creation. A message counts on the day it was created; a reply is an
assistant message, failed when it ended ``failed``; its time is from creation (when it was
queued) to completion, for those that completed. Token counts come from a message's ``usage``
(``{"input_tokens", "output_tokens"}``, as the agent's upstream reported them), 0 where nothing
was reported.
"""

from __future__ import annotations

from datetime import date, timedelta

import attrs

from aiosvc.store.db import Database

#: The longest range a report covers, in days.
MAX_DAYS = 366


@attrs.frozen(kw_only=True)
class DayStats:
    """What happened on one day."""

    date: str  # YYYY-MM-DD, UTC
    sessions: int  # created that day
    messages: int  # created that day, replies included
    replies: int
    failed: int  # replies that failed
    input_tokens: int
    output_tokens: int


@attrs.frozen(kw_only=True)
class Totals:
    """The sums over every day of the range."""

    sessions: int
    messages: int
    replies: int
    failed: int
    input_tokens: int
    output_tokens: int


@attrs.frozen(kw_only=True)
class AgentStats:
    """One agent's replies over the range."""

    agent: str
    replies: int
    failed: int
    #: The median seconds from a reply's creation to its completion (null: none completed).
    p50_reply_s: float | None


@attrs.frozen(kw_only=True)
class Stats:
    """A report over the last days, today (UTC) included."""

    totals: Totals
    per_day: list[DayStats]
    per_agent: list[AgentStats]


_DAY = "substr(created_at, 1, 10)"
_SESSIONS = f"""
SELECT {_DAY} AS day, COUNT(*) AS sessions FROM sessions
WHERE created_at >= ? AND created_at < ? GROUP BY day
"""
_MESSAGES = f"""
SELECT {_DAY} AS day, COUNT(*) AS messages FROM messages
WHERE created_at >= ? AND created_at < ? GROUP BY day
"""


def _tokens(name: str) -> str:
    """The SQL sum of one of ``usage``'s counts (a value that is not JSON counts as none)."""
    return f"TOTAL(CASE WHEN json_valid(usage) THEN json_extract(usage, '$.{name}') END)"


#: ``role = 'assistant'`` as the partial index ``replies_by_created`` says it, so it is used.
_REPLIES = f"""
SELECT {_DAY} AS day, COUNT(*) AS replies, TOTAL(status = 'failed') AS failed,
       {_tokens("input_tokens")} AS input_tokens, {_tokens("output_tokens")} AS output_tokens
FROM messages WHERE role = 'assistant' AND created_at >= ? AND created_at < ? GROUP BY day
"""
#: Per agent: the replies in range (with their session's agent), their count, the failed ones,
#: and the median time of the completed ones (the middle one, or the mean of the two middle).
_AGENTS = """
WITH replies AS (
    SELECT s.agent AS agent, m.status AS status,
           CASE WHEN m.status = 'complete' AND m.completed_at IS NOT NULL
                THEN (julianday(m.completed_at) - julianday(m.created_at)) * 86400.0 END AS secs
    FROM messages AS m JOIN sessions AS s ON s.id = m.session_id
    WHERE m.created_at >= ? AND m.created_at < ? AND m.role = 'assistant'
),
ranked AS (
    SELECT agent, secs,
           ROW_NUMBER() OVER (PARTITION BY agent ORDER BY secs) AS k,
           COUNT(*) OVER (PARTITION BY agent) AS n
    FROM replies WHERE secs IS NOT NULL
),
medians AS (
    SELECT agent, AVG(secs) AS p50 FROM ranked
    WHERE k IN ((n + 1) / 2, (n + 2) / 2) GROUP BY agent
),
counts AS (
    SELECT agent, COUNT(*) AS replies, TOTAL(status = 'failed') AS failed
    FROM replies GROUP BY agent
)
SELECT c.agent, c.replies, c.failed, m.p50
FROM counts AS c LEFT JOIN medians AS m ON m.agent = c.agent
ORDER BY c.agent
"""


async def report(db: Database, days: int, today: date) -> Stats:
    """Statistics of the ``days`` days up to ``today``, every day present (zeros included)."""
    first = today - timedelta(days=days - 1)
    since, until = first.isoformat(), (today + timedelta(days=1)).isoformat()
    sessions = {r["day"]: r for r in await db.report(_SESSIONS, [since, until])}
    messages = {r["day"]: r for r in await db.report(_MESSAGES, [since, until])}
    replies = {r["day"]: r for r in await db.report(_REPLIES, [since, until])}
    per_day = []
    for offset in range(days):
        day = (first + timedelta(days=offset)).isoformat()
        s, m, r = sessions.get(day), messages.get(day), replies.get(day)
        per_day.append(
            DayStats(
                date=day,
                sessions=int(s["sessions"]) if s else 0,
                messages=int(m["messages"]) if m else 0,
                replies=int(r["replies"]) if r else 0,
                failed=int(r["failed"]) if r else 0,
                input_tokens=int(r["input_tokens"]) if r else 0,
                output_tokens=int(r["output_tokens"]) if r else 0,
            )
        )
    per_agent = [
        AgentStats(
            agent=r["agent"],
            replies=int(r["replies"]),
            failed=int(r["failed"]),
            p50_reply_s=None if r["p50"] is None else round(float(r["p50"]), 3),
        )
        for r in await db.report(_AGENTS, [since, until])
    ]
    totals = Totals(
        **{
            field: sum(getattr(d, field) for d in per_day)
            for field in (f.name for f in attrs.fields(Totals))
        }
    )
    return Stats(totals=totals, per_day=per_day, per_agent=per_agent)

#!/usr/bin/env python3
"""Stats benchmark: ``GET /api/v1/stats``'s queries on a database of many messages.

It builds a database (``--messages`` messages, half of them replies, over ``--sessions``
sessions of four agents, spread over the last ``--spread`` days, one reply in ten failed),
opens it as the daemon does and prints, for 30 and 366 days:

- the time of the whole report (its three queries), the first run and the median of five;
- the worst latency of a trivial read on the connection that serves requests, polled while
  the reports run (the reports have a connection of their own);
- the query plans, to show the indexes in use.

With ``--usage``, the messages get the ``usage`` column (``{"input_tokens",
"output_tokens"}`` on each reply), as agents that report tokens fill it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from aiosvc.store import Database, Store
from aiosvc.store import stats as stats_sql

AGENTS = ("echo", "coder", "writer", "broken")


def build(db: Path, sessions: int, messages: int, spread: int, usage: bool) -> float:
    """Fill the (migrated) database; return the seconds it took."""
    started = time.monotonic()
    now = datetime.now(UTC)
    rng = random.Random(7)

    def stamp(day: int, second: float) -> str:
        moment = now - timedelta(days=day) + timedelta(seconds=second)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        if usage:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
            if "usage" not in columns:
                conn.execute("ALTER TABLE messages ADD COLUMN usage TEXT")
        session_days = [rng.randrange(spread) for _ in range(sessions)]
        conn.executemany(
            "INSERT INTO sessions (id, title, agent, project, computer, status, created_at, "
            "updated_at, message_count) VALUES (?, '', ?, NULL, 'here', 'idle', ?, ?, 0)",
            [
                (f"ses_{n:07d}", AGENTS[n % len(AGENTS)], stamp(d, -3600), stamp(d, -3600))
                for n, d in enumerate(session_days)
            ],
        )
        rows: list[tuple[object, ...]] = []
        for n in range(messages):
            session = n // 2 % sessions
            day = session_days[session]
            created = stamp(day, -3000 + n % 2000)
            reply = n % 2 == 1
            failed = reply and rng.random() < 0.1
            completed = stamp(day, -3000 + n % 2000 + rng.uniform(0.2, 8.0))
            tokens = (
                json.dumps({"input_tokens": rng.randrange(50, 500), "output_tokens": 100})
                if reply and usage
                else None
            )
            row: tuple[object, ...] = (
                f"msg_{n:08d}",
                f"ses_{session:07d}",
                "assistant" if reply else "user",
                "lorem ipsum dolor sit amet " * 4,
                "failed" if failed else "complete",
                created,
                completed,
            )
            rows.append((*row, tokens) if usage else row)
            if len(rows) == 50_000:
                insert(conn, rows, usage)
                rows = []
        insert(conn, rows, usage)
        conn.execute("ANALYZE")
    return time.monotonic() - started


def insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]], usage: bool) -> None:
    columns = "id, session_id, role, content, status, created_at, completed_at"
    columns += ", usage" if usage else ""
    marks = ", ".join("?" for _ in columns.split(","))
    conn.executemany(f"INSERT INTO messages ({columns}) VALUES ({marks})", rows)


async def measure(db: Path, days: int) -> tuple[float, float, float, stats_sql.Stats]:
    """The first report's seconds, the median of five more, and the worst trivial read
    meanwhile."""
    database = Database(db)
    await database.open()
    store = Store(database)
    today = datetime.now(UTC).date()
    worst = 0.0
    running = True

    async def poll() -> None:
        nonlocal worst
        while running:
            started = time.perf_counter()
            await database.fetchone("SELECT 1")
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.005)

    poller = asyncio.create_task(poll())
    try:
        started = time.perf_counter()
        report = await store.stats(days, today)
        first = time.perf_counter() - started
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await store.stats(days, today)
            times.append(time.perf_counter() - started)
    finally:
        running = False
        await poller
        await database.close()
    return first, statistics.median(times), worst, report


def plans(db: Path, today: date) -> None:
    """Print the query plans of the report's queries."""
    since = (today - timedelta(days=29)).isoformat()
    until = (today + timedelta(days=1)).isoformat()
    with sqlite3.connect(db) as conn:
        queries = {
            "sessions per day": stats_sql._SESSIONS,
            "messages per day": stats_sql._MESSAGES,
            "replies per day": stats_sql._REPLIES,
            "per agent": stats_sql._AGENTS,
        }
        for name, sql in queries.items():
            print(f"  plan, {name}:")
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql, [since, until]):
                print(f"    {row[3]}")


async def bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="aiosvc-bench-stats-") as tmp:
        db = Path(tmp) / "stats.db"
        database = Database(db)
        await database.open()  # creates and migrates it
        await database.close()
        seconds = build(db, args.sessions, args.messages, args.spread, args.usage)
        size = db.stat().st_size / 1e6
        print(
            f"built {args.messages} messages in {args.sessions} sessions over {args.spread} "
            f"days{' with usage' if args.usage else ''} in {seconds:.1f} s ({size:.0f} MB)"
        )
        for days in (30, 366):
            first, median, worst, report = await measure(db, days)
            print(
                f"days={days}: first {first * 1000:.0f} ms, median {median * 1000:.0f} ms; "
                f"worst trivial read meanwhile {worst * 1000:.1f} ms; totals "
                f"{report.totals.messages} messages, {report.totals.replies} replies, "
                f"{report.totals.failed} failed, {report.totals.input_tokens} input tokens"
            )
        plans(db, datetime.now(UTC).date())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=5_000)
    parser.add_argument("--spread", type=int, default=60, help="days the data covers")
    parser.add_argument("--usage", action="store_true", help="with a usage column")
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

"""Pages of histories and of session lists: indexed queries whose cost is the page's.

A page starts at an offset, or just after or just before a cursor (an item's ``seq``, the
order of creation). Both walk an index (``messages_by_session``; the sessions' rowid or
their ``sessions_by_*`` index): a cursor seeks straight to its place, an offset steps over
index entries without reading their rows. Every query asks for one row more than the page,
to tell whether more follow without counting.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import attrs

from aiosvc.models import Message
from aiosvc.store.db import Database, Params
from aiosvc.store.tables import MESSAGES

#: The columns of a message row, with its place in the history first.
MESSAGE_SELECT = f"SELECT seq, {', '.join(MESSAGES.columns)} FROM messages"


@attrs.frozen(kw_only=True)
class Span:
    """Which rows a page holds: ``limit`` of them from ``offset``, or right after or right
    before the row whose seq is ``after`` or ``before``, in the list's order."""

    limit: int
    offset: int = 0
    after: int | None = None
    before: int | None = None


@attrs.frozen
class Rows:
    """A page's rows in the list's order, and whether items precede or follow them."""

    rows: list[sqlite3.Row]
    more_before: bool
    more_after: bool


async def page(
    db: Database,
    select: str,
    where: Sequence[str],
    params: Params,
    span: Span,
    *,
    newest_first: bool,
) -> Rows:
    """One page of ``select``'s rows filtered by ``where``, ordered by seq (descending when
    ``newest_first``)."""
    later, earlier = (">", "<") if not newest_first else ("<", ">")
    forward, backward = ("ASC", "DESC") if not newest_first else ("DESC", "ASC")
    conditions, values, order = list(where), list(params), forward
    if span.before is not None:  # read backwards from the cursor, then turn the page around
        conditions.append(f"seq {earlier} ?")
        values.append(span.before)
        order = backward
    elif span.after is not None:
        conditions.append(f"seq {later} ?")
        values.append(span.after)
    sql = select
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += f" ORDER BY seq {order} LIMIT ? OFFSET ?"
    rows = await db.fetchall(sql, [*values, span.limit + 1, span.offset])
    more = len(rows) > span.limit
    del rows[span.limit :]
    if span.before is not None:
        rows.reverse()
        return Rows(rows, more_before=more, more_after=True)
    return Rows(rows, more_before=span.after is not None or span.offset > 0, more_after=more)


async def message_rows(db: Database, session_id: str, span: Span) -> Rows:
    """A page of a session's history, oldest first."""
    return await page(
        db, MESSAGE_SELECT, ["session_id = ?"], [session_id], span, newest_first=False
    )


async def message_seq(db: Database, session_id: str, message_id: str) -> int | None:
    """Where a message is in its session's history, or None if it is not in it."""
    row = await db.fetchone(
        "SELECT seq FROM messages WHERE id = ? AND session_id = ?", [message_id, session_id]
    )
    return int(row["seq"]) if row else None


async def message(db: Database, message_id: str) -> Message | None:
    """One message, if it exists (and reads back)."""
    row = await db.fetchone(f"{MESSAGE_SELECT} WHERE id = ?", [message_id])
    loaded = MESSAGES.load_all([row] if row else [])
    return loaded[0] if loaded else None


async def session_rows(db: Database, filters: Sequence[tuple[str, str]], span: Span) -> Rows:
    """A page of session ids, newest first, matching every ``(column, value)`` filter."""
    where = [f"{column} = ?" for column, _ in filters]
    values = [value for _, value in filters]
    return await page(db, "SELECT seq, id FROM sessions", where, values, span, newest_first=True)


async def session_seq(db: Database, session_id: str) -> int | None:
    """Where a session is in the order of creation, or None if it does not exist."""
    row = await db.fetchone("SELECT seq FROM sessions WHERE id = ?", [session_id])
    return int(row["seq"]) if row else None

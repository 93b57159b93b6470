"""Pages of histories and of session lists: indexed queries whose cost is the page's.

A page starts at an offset, or just after or just before a cursor (an item's ``seq``, the
order of creation). Both walk an index (``messages_by_session``; the sessions' rowid or
their ``sessions_by_*`` index): a cursor seeks straight to its place, an offset steps over
index entries without reading their rows. Every query asks for one row more than the page,
to tell whether more follow without counting.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from aiosvc.models import Message, MessageStatus, Role
from aiosvc.store.db import Database, Params
from aiosvc.store.tables import MESSAGES, Table

#: The columns of a message row, with its place in the history first.
MESSAGE_SELECT = f"SELECT seq, {', '.join(MESSAGES.columns)} FROM messages"


def _json_object(table: Table[Any]) -> str:
    """SQL building a row's JSON as the model's (its fields are the table's columns, in order;
    JSON columns are embedded as JSON)."""
    fields = (
        f"'{c}', json({c})" if c in table.json_columns else f"'{c}', {c}" for c in table.columns
    )
    return f"json_object({', '.join(fields)})"


def _one_of(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


#: What reading a message row into its model checks beyond the table's own types (STRICT,
#: NOT NULL): a row that fails it is damaged, and is read the slow way, to be logged.
_READABLE = " AND ".join(
    (
        _one_of("role", (r.value for r in Role)),
        _one_of("status", (s.value for s in MessageStatus)),
        "(error IS NULL OR (json_valid(error) AND json_type(error, '$.code') = 'text'"
        " AND json_type(error, '$.message') = 'text'))",
    )
)

#: A page's message rows as their JSON, built in the database's thread (about 1 us a row,
#: none of it holding the event loop), exactly sized; NULL for a damaged row.
MESSAGE_JSON_SELECT = (
    f"SELECT seq, id, status, CAST(CASE WHEN {_READABLE} THEN {_json_object(MESSAGES)} END "
    "AS BLOB) AS json FROM messages"
)


@attrs.frozen(kw_only=True)
class Span:
    """Which rows a page holds: ``limit`` of them from ``offset``, or right after or right
    before the row whose seq is ``after`` or ``before``, in the list's order. With ``total``,
    the list's length as the caller counts it, an offset past the middle is walked from the
    end: an offset costs the distance to the nearer end of the list."""

    limit: int
    offset: int = 0
    after: int | None = None
    before: int | None = None
    total: int | None = None


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
    conditions, values = list(where), list(params)
    total = span.total
    if span.before is not None:  # read backwards from the cursor, then turn the page around
        conditions.append(f"seq {earlier} ?")
        rows = await _select(db, select, conditions, [*values, span.before], backward, span)
        more = len(rows) > span.limit
        del rows[span.limit :]
        rows.reverse()
        return Rows(rows, more_before=more, more_after=True)
    if span.after is not None:
        conditions.append(f"seq {later} ?")
        rows = await _select(db, select, conditions, [*values, span.after], forward, span)
    elif total is not None and total // 2 < span.offset < total:
        # Past the middle: skip the rows after the page instead of those before it.
        end = min(span.offset + span.limit, total)
        back = Span(limit=end - span.offset, offset=total - end)
        rows = await _select(db, select, conditions, values, backward, back)
        more = len(rows) > back.limit
        del rows[back.limit :]
        rows.reverse()
        return Rows(rows, more_before=more, more_after=back.offset > 0)
    else:
        rows = await _select(db, select, conditions, values, forward, span)
    more = len(rows) > span.limit
    del rows[span.limit :]
    return Rows(rows, more_before=span.after is not None or span.offset > 0, more_after=more)


async def _select(
    db: Database, select: str, conditions: list[str], values: list[Any], order: str, span: Span
) -> list[sqlite3.Row]:
    """The span's rows (and one more, to tell whether more follow) in this order of seq."""
    sql = select
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += f" ORDER BY seq {order} LIMIT ? OFFSET ?"
    return await db.fetchall(sql, [*values, span.limit + 1, span.offset])


async def message_rows(db: Database, session_id: str, span: Span, *, json: bool = False) -> Rows:
    """A page of a session's history, oldest first: its rows (:data:`MESSAGE_SELECT`) or, with
    ``json``, the messages' JSON (:data:`MESSAGE_JSON_SELECT`)."""
    select = MESSAGE_JSON_SELECT if json else MESSAGE_SELECT
    return await page(db, select, ["session_id = ?"], [session_id], span, newest_first=False)


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

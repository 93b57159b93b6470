"""Durable storage: what must survive a restart, in one SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import date
from typing import Any

import attrs
import orjson

from aiosvc.models import (
    Approval,
    ApprovalStatus,
    Command,
    CommandStatus,
    ErrorInfo,
    Message,
    MessageStatus,
    Session,
    SessionStatus,
)
from aiosvc.store import pages, stats
from aiosvc.store.db import Database, Statement
from aiosvc.store.errors import StoreError
from aiosvc.store.faults import StorageFull, StorageUnavailable
from aiosvc.store.lock import DatabaseLock, DatabaseLocked
from aiosvc.store.pages import Rows, Span
from aiosvc.store.tables import APPROVALS, COMMANDS, MESSAGES, SESSIONS

__all__ = [
    "Database",
    "DatabaseLock",
    "DatabaseLocked",
    "Recovery",
    "Rows",
    "Span",
    "Statement",
    "StorageFull",
    "StorageUnavailable",
    "Store",
    "StoreError",
    "remember_tool",
]

#: Rows per query when a whole history is read (by the agent that needs it): each page is
#: made into models in the event loop, a few milliseconds at this size.
HISTORY_PAGE = 200
#: The columns a session list may be filtered by (each has its index).
SESSION_FILTERS = frozenset({"status", "project", "computer"})

INTERRUPTED = ErrorInfo(code="interrupted", message="the server stopped before the reply finished")


@attrs.frozen
class Recovery:
    """What startup found unfinished from the previous run, and did about it."""

    failed_replies: int
    expired_approvals: int
    requeued: list[tuple[Command, dict[str, Any]]]
    #: The first event id of this run, and the last one reserved for it.
    first_event_id: int = 1
    event_ids_reserved: int = 0


class Store:
    """Reads and writes the models; every write goes through the database's one writer."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, statements: Iterable[Statement]) -> None:
        """Commit these statements together (see :meth:`Database.write`)."""
        await self.db.write(statements)

    # Sessions and messages ---------------------------------------------------------------------

    async def sessions(self) -> list[Session]:
        """Every session, newest first."""
        rows = await self.db.fetchall(f"{SESSIONS.select} ORDER BY seq DESC")
        return SESSIONS.load_all(rows)

    async def messages(self, session_id: str) -> list[Message]:
        """A session's whole history, oldest first (read a page at a time)."""
        return [m async for page in self.history(session_id) for m in page]

    async def history(
        self, session_id: str, page_size: int = HISTORY_PAGE
    ) -> AsyncIterator[list[Message]]:
        """A session's history, oldest first, a page at a time: each page is one short query,
        so other reads (``/health``'s included) go between them."""
        after: int | None = None
        while True:
            found = await pages.message_rows(
                self.db, session_id, Span(limit=page_size, after=after)
            )
            if found.rows:
                yield MESSAGES.load_all(found.rows)
            if not found.more_after:
                return
            after = found.rows[-1]["seq"]

    async def message_json(self, session_id: str, span: Span) -> Rows:
        """One page of a session's history, oldest first, as each row's ``seq``, ``id``,
        ``status`` and ``json`` (None for a row that does not read back: see
        :meth:`message`)."""
        return await pages.message_rows(self.db, session_id, span, json=True)

    async def message_seq(self, session_id: str, message_id: str) -> int | None:
        """Where a message is in its session's history, or None if it is not there."""
        return await pages.message_seq(self.db, session_id, message_id)

    async def message(self, message_id: str) -> Message | None:
        """One message, if it exists."""
        return await pages.message(self.db, message_id)

    async def session_rows(self, filters: Iterable[tuple[str, str]], span: Span) -> Rows:
        """One page of session ids (and seqs), newest first, matching every filter."""
        checked = list(filters)
        unknown = [c for c, _ in checked if c not in SESSION_FILTERS]
        if unknown:  # the names go into the SQL: only the indexed columns ever may
            raise ValueError(f"sessions cannot be filtered by {unknown}")
        return await pages.session_rows(self.db, checked, span)

    async def session_seq(self, session_id: str) -> int | None:
        """Where a session is in the order of creation, or None if it does not exist."""
        return await pages.session_seq(self.db, session_id)

    async def session_counts(self, projects: Iterable[str]) -> dict[str, int]:
        """How many sessions each of these projects has (one count over the project index)."""
        names = sorted(set(projects))
        if not names:
            return {}
        marks = ", ".join("?" for _ in names)
        rows = await self.db.fetchall(
            f"SELECT project, COUNT(*) AS n FROM sessions WHERE project IN ({marks}) "
            "GROUP BY project",
            names,
        )
        return {row["project"]: int(row["n"]) for row in rows}

    async def stats(self, days: int, today: date) -> stats.Stats:
        """Statistics of the ``days`` days up to ``today`` (see :mod:`aiosvc.store.stats`)."""
        return await stats.report(self.db, days, today)

    # Commands ----------------------------------------------------------------------------------

    async def command(self, command_id: str) -> Command | None:
        """One command, if it exists."""
        row = await self.db.fetchone(f"{COMMANDS.select} WHERE id = ?", [command_id])
        return COMMANDS.load(row) if row else None

    # Approvals ---------------------------------------------------------------------------------

    async def approvals(self) -> list[Approval]:
        """Every approval, oldest first."""
        rows = await self.db.fetchall(f"{APPROVALS.select} ORDER BY seq")
        return APPROVALS.load_all(rows)

    async def remembered(self, session_id: str, tool: str) -> bool:
        """Tell whether a person approved ``tool`` for the rest of the session."""
        row = await self.db.fetchone(
            "SELECT 1 FROM remembered_tools WHERE session_id = ? AND tool = ?", [session_id, tool]
        )
        return row is not None

    # Startup -----------------------------------------------------------------------------------

    async def recover(self, now: str, event_id_block: int = 0) -> Recovery:
        """Settle what the previous run left unfinished.

        A reply that was streaming (its process died under it) is marked failed, never left
        streaming; its command fails with it. Pending approvals expire. Commands still queued
        are handed back to be run again, in order: their user messages were acknowledged.
        With ``event_id_block``, this run's first block of event ids is reserved in the same
        write: starting takes one small write, which can be retried whole.
        """
        db = self.db
        running = await db.fetchall(
            "SELECT id, payload FROM commands WHERE status = 'running' ORDER BY seq"
        )
        reply_ids = [orjson.loads(r["payload"])["reply_id"] for r in running if r["payload"]]
        error = orjson.dumps(attrs.asdict(INTERRUPTED)).decode()
        statements: list[Statement] = []
        for reply_id in reply_ids:
            statements.append(
                (
                    "UPDATE messages SET status = ?, completed_at = ?, error = ? "
                    "WHERE id = ? AND status IN ('pending', 'streaming')",
                    [MessageStatus.FAILED, now, error, reply_id],
                )
            )
        statements.append(
            (
                "UPDATE commands SET status = ?, finished_at = ?, error = ? WHERE status = ?",
                [CommandStatus.FAILED, now, error, CommandStatus.RUNNING],
            )
        )
        # Any other streaming message is an orphan of the same crash.
        statements.append(
            (
                "UPDATE messages SET status = ?, completed_at = ?, error = ? "
                "WHERE status = 'streaming'",
                [MessageStatus.FAILED, now, error],
            )
        )
        pending = await db.fetchall("SELECT id FROM approvals WHERE status = 'pending'")
        statements.append(
            (
                "UPDATE approvals SET status = ?, resolved_at = ? WHERE status = ?",
                [ApprovalStatus.EXPIRED, now, ApprovalStatus.PENDING],
            )
        )
        statements.append(
            (
                "UPDATE sessions SET status = ?, updated_at = ? WHERE status IN (?, ?)",
                [SessionStatus.IDLE, now, SessionStatus.RUNNING, SessionStatus.WAITING_APPROVAL],
            )
        )
        first_id = reserved = 0
        if event_id_block:
            row = await db.fetchone("SELECT value FROM meta WHERE key = 'event_id_reserved'")
            previous = int(row["value"]) if row else 0
            first_id, reserved = previous + 1, previous + event_id_block
            statements.append(_reservation(reserved))
        await db.write(statements)
        columns = ", ".join((*COMMANDS.columns, "payload"))
        queued = await db.fetchall(
            f"SELECT {columns} FROM commands WHERE status = 'queued' ORDER BY seq"
        )
        requeued = [(COMMANDS.load(row), orjson.loads(row["payload"] or "{}")) for row in queued]
        return Recovery(len(running), len(pending), requeued, first_id, reserved)

    async def reserve_event_ids(self, block: int) -> tuple[int, int]:
        """Reserve a fresh block of event ids; return (first id, last reserved id)."""
        row = await self.db.fetchone("SELECT value FROM meta WHERE key = 'event_id_reserved'")
        previous = int(row["value"]) if row else 0
        until = previous + block
        await self.set_event_ids_reserved(until)
        return previous + 1, until

    async def set_event_ids_reserved(self, until: int) -> None:
        """Record that every event id up to ``until`` may have been handed out."""
        await self.db.write([_reservation(until)])


def remember_tool(session_id: str, tool: str, approval_id: str, now: str) -> Statement:
    """The statement that approves ``tool`` for the rest of the session (the first approval
    that said so is kept)."""
    return (
        "INSERT INTO remembered_tools (session_id, tool, approval_id, created_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (session_id, tool) DO NOTHING",
        [session_id, tool, approval_id, now],
    )


def _reservation(until: int) -> Statement:
    """The statement that records every event id up to ``until`` as reserved (never lower)."""
    return (
        "INSERT INTO meta (key, value) VALUES ('event_id_reserved', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
        "WHERE CAST(excluded.value AS INTEGER) > CAST(value AS INTEGER)",
        [str(until)],
    )

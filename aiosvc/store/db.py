"""The SQLite database: opening and checking it, migrations, one writer, one reader.

aiosqlite runs every call of a connection on that connection's own thread, and tasks sharing a
connection share its transaction. So there is exactly one write connection, driven by one writer
task that groups whatever writes are waiting into a single transaction (group commit), and a
separate read connection that sees committed data only (WAL).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from time import perf_counter
from typing import Any

import aiosqlite
import attrs
import structlog

from aiosvc.metrics import Histogram, Metrics

log = structlog.get_logger(__name__)

Params = Sequence[Any]
Statement = tuple[str, Params]

#: How many queued write requests one transaction takes at most.
MAX_BATCH = 512


class StoreError(Exception):
    """The database cannot be used: corrupt, unreadable, or from a newer version."""


@attrs.define
class _WriteRequest:
    statements: Sequence[Statement]
    done: asyncio.Future[None]


def migrations() -> list[tuple[int, str, str]]:
    """Return the numbered SQL migrations shipped with the package, in order."""
    folder = resources.files("aiosvc.store.migrations")
    steps = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            steps.append((number, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(steps)


def schema_version() -> int:
    """The schema version this code writes."""
    return migrations()[-1][0]


class Database:
    """The one write connection (with its writer task) and one read connection."""

    def __init__(self, path: Path, metrics: Metrics | None = None) -> None:
        self.path = path
        #: How long each write transaction took.
        self.commit_seconds: Histogram = (metrics or Metrics()).db_commit_seconds
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_WriteRequest | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None

    # Lifecycle ---------------------------------------------------------------------------------

    async def open(self, *, migrate: bool = True, require_current: bool = True) -> None:
        """Open (creating if new), check, migrate, and start the writer."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create its folder: {exc}") from None
        try:
            self._writer_conn = await self._connect()
            await self._check(self._writer_conn)
            if migrate:
                await self.migrate()
            elif require_current:
                await self._require_current()
            self._reader_conn = await self._connect(readonly=True)
        except BaseException:
            await self.close()
            raise
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name="aiosvc-db-writer"
        )

    async def _connect(self, *, readonly: bool = False) -> aiosqlite.Connection:
        target = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}?mode=rwc"
        try:
            conn = await aiosqlite.connect(target, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            if not readonly:
                mode = await (await conn.execute("PRAGMA journal_mode = WAL")).fetchone()
                if mode is None or mode[0] != "wal":
                    raise StoreError(f"{self.path}: cannot switch the database to WAL mode")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            await conn.close()
            raise StoreError(f"{self.path}: not a usable SQLite database: {exc}") from None
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _check(self, conn: aiosqlite.Connection) -> None:
        """Refuse a corrupt file or one written by a newer version; never recreate it."""
        try:
            row = await (await conn.execute("PRAGMA quick_check")).fetchone()
            version = await self._user_version(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite database: {exc}") from None
        if row is None or row[0] != "ok":
            raise StoreError(f"{self.path}: the database is corrupt: {row[0] if row else '?'}")
        if version > schema_version():
            raise StoreError(
                f"{self.path}: the database has schema version {version}, newer than this "
                f"aiosvc understands ({schema_version()}); upgrade aiosvc or use another file"
            )

    @staticmethod
    async def _user_version(conn: aiosqlite.Connection) -> int:
        row = await (await conn.execute("PRAGMA user_version")).fetchone()
        return int(row[0]) if row else 0

    async def migrate(self) -> list[str]:
        """Apply every migration newer than the file's version; return their names."""
        conn = self._require_writer()
        current = await self._user_version(conn)
        applied = []
        for number, name, sql in migrations():
            if number <= current:
                continue
            try:
                await conn.execute("BEGIN IMMEDIATE")
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {number:d}")
                await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                await conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: migration {name} failed: {exc}") from None
            log.info("migration_applied", migration=name)
            applied.append(name)
        return applied

    async def _require_current(self) -> None:
        version = await self._user_version(self._require_writer())
        if version != schema_version():
            raise StoreError(
                f"{self.path}: schema version {version}, expected {schema_version()}: "
                "run 'aiosvc migrate'"
            )

    async def close(self) -> None:
        """Finish queued writes, stop the writer and close both connections."""
        if self._writer_task is not None:
            self._queue.put_nowait(None)
            await self._writer_task
            self._writer_task = None
        for conn in (self._reader_conn, self._writer_conn):
            if conn is not None:
                await conn.close()
        self._reader_conn = self._writer_conn = None

    def _require_writer(self) -> aiosqlite.Connection:
        if self._writer_conn is None:
            raise StoreError("the database is not open")
        return self._writer_conn

    # Writing -----------------------------------------------------------------------------------

    async def write(self, statements: Iterable[Statement]) -> None:
        """Run ``statements`` in one transaction (shared with other waiting writes); wait for
        the commit."""
        if self._writer_task is None or self._writer_task.done():
            raise StoreError("the database writer is not running")
        request = _WriteRequest(tuple(statements), asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        await request.done

    async def _write_loop(self) -> None:
        conn = self._require_writer()
        while True:
            first = await self._queue.get()
            batch: list[_WriteRequest] = []
            stopping = first is None
            if first is not None:
                batch.append(first)
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                await self._commit(conn, batch)
            if stopping:
                return

    async def _commit(self, conn: aiosqlite.Connection, batch: list[_WriteRequest]) -> None:
        """Commit the batch as one transaction; if it fails, retry each request on its own so
        only the faulty one fails."""
        try:
            started = perf_counter()
            await self._run(conn, batch)
            self.commit_seconds.observe(perf_counter() - started)
        except sqlite3.Error as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            for request in batch:
                try:
                    await self._run(conn, [request])
                except sqlite3.Error as one:
                    self._fail(request, one)
                else:
                    _resolve(request.done, None)
            return
        for request in batch:
            _resolve(request.done, None)

    @staticmethod
    async def _run(conn: aiosqlite.Connection, batch: list[_WriteRequest]) -> None:
        """One transaction for the batch, with one ``executemany`` per distinct statement.

        Every call to aiosqlite is a round trip to its thread, so rows of the same shape go
        together, in first-come order; per table, rows keep their order. Foreign keys are
        checked at commit (``defer_foreign_keys``) since grouping can put a message's row
        before its session's. So writes of different shapes in one batch must not rely on
        their relative order: each save writes a whole row, and a deleted session is never
        written again.
        """
        groups: dict[str, list[Params]] = {}
        for request in batch:
            for sql, params in request.statements:
                groups.setdefault(sql, []).append(params)
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute("PRAGMA defer_foreign_keys = ON")
            for sql, rows in groups.items():
                if len(rows) == 1:
                    await conn.execute(sql, rows[0])
                else:
                    await conn.executemany(sql, rows)
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _fail(request: _WriteRequest, exc: sqlite3.Error) -> None:
        log.error("write_failed", error=str(exc))
        if not request.done.done():
            request.done.set_exception(StoreError(f"write failed: {exc}"))

    # Reading -----------------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run a query on the read connection and return every row."""
        conn = self._reader_conn
        if conn is None:
            raise StoreError("the database is not open")
        conn.row_factory = sqlite3.Row
        return list(await conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """Run a query on the read connection and return its first row, if any."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def ping(self) -> bool:
        """Tell whether the database answers a trivial query."""
        try:
            await self.fetchone("SELECT 1")
        except (sqlite3.Error, StoreError, ValueError):
            return False
        return self._writer_task is not None and not self._writer_task.done()


def _resolve(future: asyncio.Future[None], value: None) -> None:
    if not future.done():
        future.set_result(value)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (our migrations have no ';' in literals)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]

"""The SQLite database: its lock, one writer, one reader (connections opened, checked and
migrated by :mod:`aiosvc.store.connection`).

aiosqlite runs every call of a connection on that connection's own thread, and tasks sharing a
connection share its transaction. So there is exactly one write connection, driven by one writer
task that groups whatever writes are waiting into a single transaction (group commit), and a
separate read connection that sees committed data only (WAL).

A write is acknowledged only once it is durable in the file the path names: whatever goes
wrong (a full disk, the file deleted, the connection lost, a bug), every waiting write gets an
error (:mod:`aiosvc.store.faults`) and the writer goes on. The last failure stays in
:attr:`Database.problem`, for ``/health``, until a write lands again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import aiosqlite
import attrs
import structlog

from aiosvc.clock import utcnow
from aiosvc.metrics import Histogram, Metrics
from aiosvc.store import connection, files
from aiosvc.store.errors import StoreError
from aiosvc.store.faults import (
    StorageFull,
    StorageUnavailable,
    classify,
    lost_connection,
)
from aiosvc.store.lock import DatabaseLock
from aiosvc.store.schema import migrations, schema_version

log = structlog.get_logger(__name__)

__all__ = [
    "Database",
    "Params",
    "Statement",
    "StorageFull",
    "StorageUnavailable",
    "StoreError",
    "migrations",
    "schema_version",
]

Params = Sequence[Any]
Statement = tuple[str, Params]

#: How many queued write requests one transaction takes at most.
MAX_BATCH = 512

#: A small write that must reach the file (SQLite skips a row that does not change, so it
#: stores the time): it proves that writes land again.
_PROBE = (
    "INSERT INTO meta (key, value) VALUES ('write_probe', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


@attrs.define
class _WriteRequest:
    statements: Sequence[Statement]
    done: asyncio.Future[None]


class Database:
    """The one write connection (with its writer task) and one read connection."""

    def __init__(self, path: Path, metrics: Metrics | None = None) -> None:
        self.path = path
        #: Held from :meth:`open` (or earlier, by whoever takes it first) to :meth:`close`.
        self.lock = DatabaseLock(path)
        #: How long each write transaction took.
        self.commit_seconds: Histogram = (metrics or Metrics()).db_commit_seconds
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        #: Reports (statistics over many rows) read on a connection of their own, opened at the
        #: first: the reads that serve requests never queue behind one.
        self._report_conn: aiosqlite.Connection | None = None
        self._report_lock = asyncio.Lock()
        self._queue: asyncio.Queue[_WriteRequest | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._file: files.FileId | None = None  # what the path named when it was opened
        self._probing: asyncio.Task[None] | None = None
        #: Why the last write failed, while no write has landed since (for ``/health``).
        self.problem: StoreError | None = None

    # Lifecycle ---------------------------------------------------------------------------------

    async def open(
        self, *, migrate: bool = True, require_current: bool = True, create: bool = False
    ) -> None:
        """Take the database's lock, open it, check, migrate, and start the writer.

        Another process holding the lock is :class:`DatabaseLocked`, nothing touched. A missing
        file is created on a first run; where a database was before (its marker or its
        write-ahead log is beside the path) it is refused unless ``create`` asks for a new one
        (see :mod:`aiosvc.store.files`).
        """
        self.lock.acquire()  # creates the folder too
        creating = not self.path.exists()
        trace = files.trace_of_previous(self.path) if creating else None
        if trace is not None and not create:
            self.lock.release()
            raise StoreError(files.missing_message(self.path, trace))
        try:
            self._writer_conn = await self._connect(create=creating)
            self._file = files.file_id(self.path)
            await connection.check(self._writer_conn, self.path)
            if migrate:
                await self.migrate()
            elif require_current:
                await connection.require_current(self._writer_conn, self.path)
            self._reader_conn = await self._connect(readonly=True)
        except BaseException:
            await self.close()
            raise
        files.mark(self.path, utcnow())
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name="aiosvc-db-writer"
        )

    async def _connect(
        self, *, readonly: bool = False, create: bool = False
    ) -> aiosqlite.Connection:
        return await connection.connect(self.path, readonly=readonly, create=create)

    async def migrate(self) -> list[str]:
        """Apply every migration newer than the file's version; return their names."""
        return await connection.migrate(self._require_writer(), self.path)

    async def close(self) -> None:
        """Finish queued writes, stop the writer and close both connections."""
        if self._probing is not None:
            await asyncio.wait([self._probing])
        if self._writer_task is not None:
            self._queue.put_nowait(None)
            await asyncio.wait([self._writer_task])
            self._writer_task = None
        try:
            async with self._report_lock:  # a report in progress finishes first
                for conn in (self._report_conn, self._reader_conn, self._writer_conn):
                    if conn is not None:
                        await conn.close()
        finally:
            self._report_conn = self._reader_conn = self._writer_conn = None
            self.lock.release()

    def _require_writer(self) -> aiosqlite.Connection:
        if self._writer_conn is None:
            raise StoreError("the database is not open")
        return self._writer_conn

    # Writing -----------------------------------------------------------------------------------

    async def write(self, statements: Iterable[Statement]) -> None:
        """Run ``statements`` in one transaction (shared with other waiting writes); wait for
        the commit. Raises a :class:`StoreError` (nothing of it stored) if it did not land."""
        if self._writer_task is None or self._writer_task.done():
            raise StorageUnavailable("the database is closed")
        request = _WriteRequest(tuple(statements), asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        await request.done

    async def _write_loop(self) -> None:
        batch: list[_WriteRequest] = []
        try:
            while True:
                first = await self._queue.get()
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
                    await self._commit(batch)
                    batch = []
                if stopping:
                    return
        finally:
            # However the loop ends (closed, cancelled, a bug), no write is left waiting.
            gone = StorageUnavailable("the database writer has stopped")
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
            for request in batch:
                _settle(request.done, gone)

    async def _commit(self, batch: list[_WriteRequest]) -> None:
        """Commit the batch as one transaction; if it fails, retry each request on its own so
        only the faulty one fails. Never raises: each request gets its outcome."""
        started = perf_counter()
        try:
            await self._run(batch)
        except Exception as exc:
            error = await self._failure(exc)
            if len(batch) > 1 and error is None:
                for request in batch:
                    await self._commit([request])
            else:
                self._fail(batch, error or classify(exc, self.path))
            return
        self.commit_seconds.observe(perf_counter() - started)
        if files.file_id(self.path) != self._file:
            # Committed into a file the path no longer names: nobody will ever read it back.
            self._fail(batch, self._gone())
            return
        self.problem = None
        for request in batch:
            _settle(request.done, None)

    async def _failure(self, exc: Exception) -> StoreError | None:
        """What a failed transaction says about the database as a whole (None: it may be the
        request itself). A connection that stopped working is dropped, to be opened again."""
        if isinstance(exc, StoreError):
            return exc
        if not isinstance(exc, sqlite3.Error):
            conn, self._writer_conn = self._writer_conn, None
            try:
                if conn is not None:
                    await conn.execute("SELECT 1")
            except Exception:
                with contextlib.suppress(Exception):  # its thread must not outlive it
                    await conn.close()  # type: ignore[union-attr]
                return lost_connection(exc)
            self._writer_conn = conn  # it still works: the request was at fault
            return None
        error = classify(exc, self.path)
        return error if isinstance(error, StorageFull | StorageUnavailable) else None

    async def _writer(self) -> aiosqlite.Connection:
        """The write connection, opened again if it was lost and the file is still ours."""
        if self._writer_conn is None:
            if files.file_id(self.path) != self._file:
                raise self._gone()
            try:
                self._writer_conn = await self._connect()
            except StoreError as exc:
                raise StorageUnavailable(str(exc)) from None
            log.warning("database_reconnected", db=str(self.path))
        return self._writer_conn

    def _gone(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"the database file {self.path} was deleted or replaced while in use: nothing more "
            "is stored. Restore it, or stop aiosvc and see 'aiosvc migrate --create'"
        )

    async def _run(self, batch: list[_WriteRequest]) -> None:
        """One transaction for the batch, with one ``executemany`` per distinct statement.

        Every call to aiosqlite is a round trip to its thread, so rows of the same shape go
        together, in first-come order; per table, rows keep their order. Foreign keys are
        checked at commit (``defer_foreign_keys``) since grouping can put a message's row
        before its session's. So writes of different shapes in one batch must not rely on
        their relative order: each save writes a whole row, and a deleted session is never
        written again.
        """
        conn = await self._writer()
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

    def _fail(self, batch: list[_WriteRequest], error: StoreError) -> None:
        if isinstance(error, StorageFull | StorageUnavailable):
            self.problem = error
        log.error("write_failed", error=str(error), code=getattr(error, "code", None))
        for request in batch:
            _settle(request.done, error)

    # Health ------------------------------------------------------------------------------------

    async def check(self) -> StoreError | None:
        """Why the database cannot take writes now, or None when it can.

        While a failure is outstanding, a small write that changes nothing tells whether
        writes land again (the disk got room, the file came back): so the daemon notices
        recovery by itself, without waiting for a client's write.
        """
        if not await self.ping():
            return StorageUnavailable("the database does not answer")
        if files.file_id(self.path) != self._file:
            self.problem = self._gone()  # no write can land until the file is back
            return self.problem
        if self.problem is not None:
            if self._probing is None:
                self._probing = asyncio.get_running_loop().create_task(self._probe())
            await asyncio.shield(self._probing)
        return self.problem

    async def _probe(self) -> None:
        try:
            await self.write([(_PROBE, [str(time.time_ns())])])
        except StoreError:
            pass  # the failure is in self.problem
        finally:
            self._probing = None

    # Reading -----------------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run a query on the read connection and return every row."""
        return await self._fetch(self._reader_conn, sql, params)

    async def report(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run a long query (over many rows) on the connection for reports; return every row.
        Reports run one at a time, beside the reads that serve requests, not before them."""
        async with self._report_lock:
            if self._report_conn is None:
                if self._reader_conn is None:
                    raise StorageUnavailable("the database is not open")
                try:
                    self._report_conn = await self._connect(readonly=True)
                except StoreError as exc:
                    raise StorageUnavailable(str(exc)) from None
            return await self._fetch(self._report_conn, sql, params)

    async def _fetch(
        self, conn: aiosqlite.Connection | None, sql: str, params: Params
    ) -> list[sqlite3.Row]:
        if conn is None:
            raise StorageUnavailable("the database is not open")
        try:
            conn.row_factory = sqlite3.Row
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            error = classify(exc, self.path, "read")
        except ValueError as exc:  # aiosqlite's, once the connection is closed
            error = StorageUnavailable(f"the database cannot be read now: {exc}")
        log.error("read_failed", error=str(error))
        raise error

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """Run a query on the read connection and return its first row, if any."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def ping(self) -> bool:
        """Tell whether the database answers a trivial query and its writer runs."""
        try:
            await self.fetchone("SELECT 1")
        except StoreError:
            return False
        return self._writer_task is not None and not self._writer_task.done()


def _settle(future: asyncio.Future[None], error: StoreError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)

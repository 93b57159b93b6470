"""The store when things go wrong: a full database, a lost connection, a deleted file, a
missing one; and the cache and locks above it. Real SQLite files throughout: the page limit
(``PRAGMA max_page_count``) fails writes exactly as a full disk does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiosvc.bus import Bus
from aiosvc.cache import Cache
from aiosvc.commands.locks import KeyedLocks
from aiosvc.models import SessionStatus
from aiosvc.store import Database, StorageFull, StorageUnavailable, Store, StoreError
from aiosvc.store.tables import SESSIONS
from tests.test_store import session


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = Database(db_path)
    await database.open()
    yield database
    await database.close()


async def limit_pages(db: Database, extra: int) -> None:
    """Let the file grow by at most ``extra`` pages (SQLite's own "disk full")."""
    row = await db.fetchone("PRAGMA page_count")
    assert row is not None
    conn = db._writer_conn
    assert conn is not None
    await conn.execute(f"PRAGMA max_page_count = {row[0] + extra}")


def problem(db: Database) -> StoreError | None:
    """The database's outstanding problem (read afresh: writes change it)."""
    return db.problem


def big_session(ident: str) -> tuple[str, list[object]]:
    """A session row far larger than a few pages."""
    sql, params = SESSIONS.save(session(ident))
    values = list(params)
    values[2] = "t" * 200_000  # the title
    return sql, values


async def test_a_full_database_is_storage_full_for_that_write_and_health_until_one_lands(
    db: Database,
) -> None:
    await limit_pages(db, 2)
    with pytest.raises(StorageFull) as caught:
        await db.write([big_session("ses_big")])
    error = caught.value
    assert error.envelope()["error"]["code"] == "insufficient_storage"
    assert error.envelope()["error"]["status"] == 507
    assert "database or disk is full" in str(error)
    assert await db.fetchall("SELECT id FROM sessions") == []
    assert db.problem is error

    # Smaller writes still fit: the first one that lands clears the problem.
    await db.write([SESSIONS.save(session("ses_small"))])
    assert problem(db) is None
    assert await db.check() is None


async def test_check_clears_the_problem_once_a_small_write_lands_again(db: Database) -> None:
    await limit_pages(db, 0)
    with pytest.raises(StorageFull):
        await db.write([big_session("ses_big")])
    assert isinstance(db.problem, StorageFull)
    # Nobody writes: the check's own small write (which still fits) tells it is over.
    assert await db.check() is None
    assert problem(db) is None
    row = await db.fetchone("SELECT value FROM meta WHERE key = 'write_probe'")
    assert row is not None


async def test_a_batch_with_one_bad_write_fails_only_that_one(db: Database) -> None:
    bad = ("INSERT INTO sessions (id) VALUES (?)", ["ses_bad"])  # NOT NULL columns missing
    good = [SESSIONS.save(session(f"ses_{n}")) for n in range(5)]
    results = await asyncio.gather(
        *(db.write([g]) for g in good[:2]),
        db.write([bad]),
        *(db.write([g]) for g in good[2:]),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["NoneType"] * 2 + ["StoreError"] + [
        "NoneType"
    ] * 3
    assert db.problem is None  # a bug in one write says nothing about the database


async def test_a_lost_connection_fails_every_waiting_write_and_the_writer_reconnects(
    db: Database,
) -> None:
    conn = db._writer_conn
    assert conn is not None
    await conn.close()  # aiosqlite now raises ValueError, not an sqlite3.Error
    waiting = [db.write([SESSIONS.save(session(f"ses_{n}"))]) for n in range(10)]
    async with asyncio.timeout(5):  # it used to hang for ever
        results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, StorageUnavailable) for r in results), results
    assert "connection was lost" in str(results[0])
    assert isinstance(db.problem, StorageUnavailable)
    await db.write([SESSIONS.save(session("ses_after"))])  # a new connection
    assert [r["id"] for r in await db.fetchall("SELECT id FROM sessions")] == ["ses_after"]
    assert problem(db) is None


async def test_writes_after_close_fail_at_once(db_path: Path) -> None:
    database = Database(db_path)
    await database.open()
    await database.close()
    with pytest.raises(StorageUnavailable, match="closed"):
        await database.write([SESSIONS.save(session())])


async def test_a_deleted_file_fails_writes_even_those_committed_into_it(
    db: Database, db_path: Path
) -> None:
    db_path.unlink()
    with pytest.raises(StorageUnavailable, match="deleted or replaced while in use"):
        await db.write([SESSIONS.save(session())])
    assert isinstance(await db.check(), StorageUnavailable)


async def test_a_replaced_file_is_noticed_too(db: Database, db_path: Path) -> None:
    db_path.rename(db_path.with_suffix(".moved"))
    db_path.write_bytes(b"")
    with pytest.raises(StorageUnavailable, match="deleted or replaced"):
        await db.write([SESSIONS.save(session())])
    db_path.unlink()
    db_path.with_suffix(".moved").rename(db_path)  # back where it was
    await db.write([SESSIONS.save(session())])
    assert await db.check() is None


async def test_a_first_run_creates_the_database_and_its_marker(db_path: Path) -> None:
    database = Database(db_path)
    await database.open()
    await database.close()
    marker = db_path.with_name("aiosvc.db.created")
    assert "aiosvc migrate --create" in marker.read_text()


async def test_a_missing_database_with_a_marker_is_refused_unless_created(db_path: Path) -> None:
    database = Database(db_path)
    await database.open()
    await database.close()
    db_path.unlink()
    with pytest.raises(StoreError, match="does not exist, but a database was there before"):
        await Database(db_path).open()
    assert not db_path.exists()
    again = Database(db_path)
    await again.open(create=True)
    await again.close()
    assert db_path.exists()


async def test_a_missing_database_with_its_wal_left_is_refused(db_path: Path) -> None:
    db_path.with_name("aiosvc.db-wal").write_bytes(b"\0" * 32)
    with pytest.raises(StoreError, match=r"aiosvc\.db-wal is beside it"):
        await Database(db_path).open()


async def test_an_existing_database_gets_its_marker(db_path: Path) -> None:
    database = Database(db_path)
    await database.open()
    await database.close()
    marker = db_path.with_name("aiosvc.db.created")
    marker.unlink()  # made by a version before markers
    await database.open()
    await database.close()
    assert marker.exists()


async def test_every_reader_of_a_history_that_fails_to_load_gets_the_error(db: Database) -> None:
    store = Store(db)
    await db.write([SESSIONS.save(session())])
    bus = Bus(buffer_size=10)
    cache = Cache(store, bus)
    await cache.load()
    reader = db._reader_conn
    assert reader is not None
    await reader.close()
    results = await asyncio.gather(
        *(cache.history("ses_1") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StorageUnavailable) for r in results), results
    cache.close()


async def test_a_reader_that_goes_away_does_not_cut_the_load_short_for_the_others(
    db: Database,
) -> None:
    store = Store(db)
    await db.write([SESSIONS.save(session(status=SessionStatus.IDLE))])
    cache = Cache(store, Bus(buffer_size=10))
    await cache.load()
    first = asyncio.create_task(cache.history("ses_1"))
    second = asyncio.create_task(cache.history("ses_1"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == []
    with pytest.raises(asyncio.CancelledError):
        await first
    cache.close()


async def test_keyed_locks_exist_only_while_held_or_awaited() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with locks.hold("k"):
            order.append(name)
            await asyncio.sleep(0.01)

    first = asyncio.create_task(hold("a"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(hold("b"))
    cancelled = asyncio.create_task(hold("c"))
    await asyncio.sleep(0)
    assert len(locks) == 1 and locks.locked("k")
    cancelled.cancel()
    await asyncio.gather(first, waiting, cancelled, return_exceptions=True)
    assert order == ["a", "b"]
    assert len(locks) == 0

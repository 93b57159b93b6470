"""The database's lock file, in process: one holder at a time, a stale file never in the way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiosvc.store import Database, DatabaseLocked, StoreError


async def test_a_second_opener_is_refused_until_the_first_closes(db_path: Path) -> None:
    first = Database(db_path)
    await first.open()
    lock = db_path.with_name("aiosvc.db.lock")
    assert lock.read_text() == f"{os.getpid()}\n"
    second = Database(db_path)
    with pytest.raises(DatabaseLocked) as refused:
        await second.open()
    assert refused.value.pid == os.getpid()
    assert str(refused.value) == (
        f"{db_path} is in use by process {os.getpid()} (an aiosvc serve or migrate holds "
        f"{lock}); stop it first, or use another database with --db"
    )
    assert isinstance(refused.value, StoreError)  # what the command line reports
    assert await first.ping()  # the holder is untouched
    await first.close()
    await second.open()
    assert await second.ping()
    await second.close()


async def test_a_stale_lock_file_is_taken_over(db_path: Path) -> None:
    lock = db_path.with_name("aiosvc.db.lock")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("4194999\n")  # a crashed holder's PID: nobody holds the flock
    database = Database(db_path)
    await database.open()
    assert lock.read_text() == f"{os.getpid()}\n"
    await database.close()
    assert lock.exists()  # left in place: removing it would race with a new holder


async def test_the_lock_is_let_go_when_opening_fails(db_path: Path) -> None:
    db_path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        await Database(db_path).open()
    db_path.unlink()
    database = Database(db_path)
    await database.open()  # not refused as locked
    await database.close()

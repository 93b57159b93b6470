"""The login store: hashed in the database, held in memory, sliding expiry, revocation."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiosvc.store import Database
from aiosvc.store.logins import Logins, key_id, token_hash

KEY = "k-0123456789"
TTL = 100.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = Database(db_path)
    await database.open()
    yield database
    await database.close()


def rows(db_path: Path) -> list[tuple[str, str, float]]:
    with sqlite3.connect(db_path) as conn:
        found = conn.execute("SELECT id, key_id, last_used_s FROM logins ORDER BY created_at")
        return list(found)


async def test_a_login_is_stored_hashed_and_found_in_memory(db: Database, db_path: Path) -> None:
    clock = Clock()
    logins = Logins(db, ttl_s=TTL, clock=clock)
    await logins.load()
    token, expires = await logins.create(KEY)
    assert len(token) == 43 and expires == clock.now + TTL
    assert rows(db_path) == [(token_hash(token), key_id(KEY), clock.now)]
    assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(rows(db_path)) and KEY not in str(rows(db_path))
    login = logins.use(token, {key_id(KEY)})
    assert login is not None and login.key_id == key_id(KEY)
    assert logins.use(token + "x", {key_id(KEY)}) is None
    assert logins.use("x" * 1000, {key_id(KEY)}) is None
    # A login whose key is no longer configured is refused (and comes back with the key)
    assert logins.use(token, {key_id("another")}) is None
    assert logins.use(token, {key_id(KEY)}) is not None


async def test_the_expiry_slides_and_the_last_use_is_written_at_most_a_minute_apart(
    db: Database, db_path: Path
) -> None:
    clock = Clock()
    logins = Logins(db, ttl_s=TTL, touch_every_s=60, clock=clock)
    token, _ = await logins.create(KEY)
    created = clock.now
    keys = {key_id(KEY)}
    for _ in range(5):  # used every 30 s for longer than its lifetime
        clock.now += 30
        login = logins.use(token, keys)
        assert login is not None
        assert logins.expires_at(login) == clock.now + TTL
    await logins.close()  # the background writes land
    # written at +60 and +120 only: not on every use
    assert rows(db_path)[0][2] == created + 120
    clock.now += TTL
    assert logins.use(token, keys) is None  # unused for its lifetime
    await logins.close()
    assert rows(db_path) == []  # and forgotten by the database too
    assert len(logins) == 0


async def test_logins_survive_a_reload_from_the_database_unless_expired(
    db: Database, db_path: Path
) -> None:
    clock = Clock()
    logins = Logins(db, ttl_s=TTL, clock=clock)
    old, _ = await logins.create(KEY)
    clock.now += 60
    fresh, _ = await logins.create(KEY)
    clock.now += TTL - 30  # the old one has expired, the fresh one has 30 s left
    again = Logins(db, ttl_s=TTL, clock=clock)
    await again.load()
    await again.close()
    assert len(again) == 1
    assert again.use(old, {key_id(KEY)}) is None
    assert again.use(fresh, {key_id(KEY)}) is not None
    assert [row[0] for row in rows(db_path)] == [token_hash(fresh)]


async def test_revoking_deletes_the_login(db: Database, db_path: Path) -> None:
    logins = Logins(db, ttl_s=TTL)
    token, _ = await logins.create(KEY)
    other, _ = await logins.create(KEY)
    assert await logins.revoke(token) is True
    assert await logins.revoke(token) is False
    assert await logins.revoke("x" * 1000) is False
    assert logins.use(token, {key_id(KEY)}) is None
    assert [row[0] for row in rows(db_path)] == [token_hash(other)]


async def test_signing_in_forgets_the_expired_logins(db: Database, db_path: Path) -> None:
    clock = Clock()
    logins = Logins(db, ttl_s=TTL, clock=clock)
    await logins.create(KEY)
    clock.now += TTL
    fresh, _ = await logins.create(KEY)
    await logins.close()
    assert len(logins) == 1
    assert [row[0] for row in rows(db_path)] == [token_hash(fresh)]

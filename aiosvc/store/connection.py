"""Connections to the SQLite file: opened in WAL mode, checked (never a corrupt file or one
from a newer version), migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import structlog

from aiosvc.store.errors import StoreError
from aiosvc.store.faults import cannot
from aiosvc.store.schema import migrations, schema_version, split_sql

log = structlog.get_logger(__name__)


async def connect(
    path: Path, *, readonly: bool = False, create: bool = False
) -> aiosqlite.Connection:
    """A connection to the database at ``path`` (read-only, or in WAL mode for writing)."""
    mode = "ro" if readonly else "rwc" if create else "rw"
    try:
        conn = await aiosqlite.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(cannot(path, "cannot open the database", exc)) from None
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            row = await (await conn.execute("PRAGMA journal_mode = WAL")).fetchone()
            if row is None or row[0] != "wal":
                raise StoreError(f"{path}: cannot switch the database to WAL mode")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        await conn.close()
        raise StoreError(cannot(path, "not a usable SQLite database", exc)) from None
    except BaseException:
        await conn.close()
        raise
    return conn


async def check(conn: aiosqlite.Connection, path: Path) -> None:
    """Refuse a corrupt file or one written by a newer version; never recreate it."""
    try:
        row = await (await conn.execute("PRAGMA quick_check")).fetchone()
        version = await user_version(conn)
    except sqlite3.DatabaseError as exc:
        raise StoreError(cannot(path, "not a usable SQLite database", exc)) from None
    if row is None or row[0] != "ok":
        raise StoreError(f"{path}: the database is corrupt: {row[0] if row else '?'}")
    if version > schema_version():
        raise StoreError(
            f"{path}: the database has schema version {version}, newer than this "
            f"aiosvc understands ({schema_version()}); upgrade aiosvc or use another file"
        )


async def user_version(conn: aiosqlite.Connection) -> int:
    """The schema version the file says it has."""
    row = await (await conn.execute("PRAGMA user_version")).fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection, path: Path) -> list[str]:
    """Apply every migration newer than the file's version; return their names."""
    current = await user_version(conn)
    applied = []
    for number, name, sql in migrations():
        if number <= current:
            continue
        try:
            await conn.execute("BEGIN IMMEDIATE")
            for statement in split_sql(sql):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number:d}")
            await conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise StoreError(cannot(path, f"migration {name} failed", exc)) from None
        log.info("migration_applied", migration=name)
        applied.append(name)
    return applied


async def require_current(conn: aiosqlite.Connection, path: Path) -> None:
    """Refuse a file whose schema is not this version's (``aiosvc migrate`` brings it up)."""
    version = await user_version(conn)
    if version != schema_version():
        raise StoreError(
            f"{path}: schema version {version}, expected {schema_version()}: run 'aiosvc migrate'"
        )

"""What a failed database operation means for the caller: full, unavailable, or a bug.

A write either lands whole or not at all (one transaction), so every error here also says that
nothing of the write was stored. The errors that come from the disk carry the API's status:
``507 insufficient_storage`` when it is full, ``503 database_unavailable`` when the database
cannot be used now (its file deleted or replaced, an I/O error, its connection lost, locked by
another program). Anything else (a constraint the code broke, say) stays a plain
:class:`StoreError`, which the API reports as an internal error.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from aiosvc.errors import InsufficientStorage, Unavailable
from aiosvc.store.errors import StoreError


class StorageFull(StoreError, InsufficientStorage):
    """A write found the disk (or the database's page limit) full; nothing of it was stored."""


class StorageUnavailable(StoreError, Unavailable):
    """The database cannot be used now; nothing of the write was stored."""

    code = "database_unavailable"


#: SQLite's primary result codes that mean the storage under the database failed, not the SQL.
_UNAVAILABLE = (
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_PERM",
)


def classify(exc: BaseException, path: Path, doing: str = "write") -> StoreError:
    """The error to report for ``exc``, raised while doing a ``write`` (or a ``read``)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None) or ""
        if name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and disk_full(path)):
            return StorageFull(f"the database could not store this: {exc} ({free_space(path)})")
        if name.startswith(_UNAVAILABLE):
            return StorageUnavailable(f"the database cannot {doing} now: {exc} ({name})")
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return StorageUnavailable(f"the database cannot {doing} now: its connection is closed")
    return StoreError(f"{doing} failed: {type(exc).__name__}: {exc}")


def lost_connection(exc: BaseException) -> StoreError:
    """The error for a connection that no longer works (aiosqlite's ``ValueError`` once it is
    closed, or anything else that made it stop)."""
    return StorageUnavailable(
        f"the database connection was lost ({type(exc).__name__}: {exc}); reconnecting"
    )


def disk_full(path: Path) -> bool:
    """Tell whether the file system holding ``path`` has (next to) no room left."""
    try:
        return shutil.disk_usage(path.parent).free < 64 * 1024
    except OSError:
        return False


def free_space(path: Path) -> str:
    """How much room is left beside ``path``, in words, for error messages."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return "free space unknown"
    return f"{free:,} bytes free on the disk holding {path.name}"


def cannot(path: Path, what: str, exc: sqlite3.Error) -> str:
    """The message for a file that cannot be opened or used, saying so if the disk is full."""
    name = getattr(exc, "sqlite_errorname", None)
    if name and name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):  # the disk, not the file
        return (
            f"{path}: cannot use the database: {exc} ({name}; {free_space(path)}): "
            "if the disk is full, free some space and start again"
        )
    return f"{path}: {what}: {exc}"

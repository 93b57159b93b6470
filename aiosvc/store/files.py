"""The database's file on disk: is it still the one we opened, and did one exist here before.

A database deleted (or replaced) while the daemon runs keeps working through the open
descriptor, into a file nobody can reach: every write would be acknowledged and then lost. So
the writer compares what the path names now with what it opened (device and inode, one
``stat``). And a database that vanished must not be silently replaced by an empty one at the
next start: when aiosvc creates a database it leaves a marker beside it (``<db>.created``),
and a missing database with a marker (or with a write-ahead log) beside it is refused unless a
new one is asked for (``aiosvc migrate --create``). A first run, with neither, just creates it.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from aiosvc import __version__

log = structlog.get_logger(__name__)

FileId = tuple[int, int]


def file_id(path: Path) -> FileId | None:
    """The (device, inode) that ``path`` names now, or None when it names nothing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def marker(db: Path) -> Path:
    """The file that records that aiosvc created a database at ``db``."""
    return db.with_name(db.name + ".created")


def trace_of_previous(db: Path) -> Path | None:
    """A file beside a missing ``db`` showing that a database was there: its marker, or a
    write-ahead log that SQLite would replay into a new file."""
    for candidate in (marker(db), db.with_name(db.name + "-wal")):
        if candidate.exists():
            return candidate
    return None


def missing_message(db: Path, trace: Path) -> str:
    """What to tell the operator when the database is gone but was there before."""
    return (
        f"{db} does not exist, but a database was there before ({trace.name} is beside it): "
        "it was deleted or moved. Restore it (with its -wal file, if any), point --db at where "
        "it is now, or start a new, empty one with 'aiosvc migrate --create'"
    )


def mark(db: Path, created_at: str) -> None:
    """Leave the marker beside ``db`` if it is not there yet (best effort: a warning if not)."""
    path = marker(db)
    if path.exists():
        return
    text = (
        f"aiosvc {__version__} has a database here ({db.name}), created or first seen at "
        f"{created_at}.\nWhile this file exists, aiosvc refuses to start without the database "
        "instead of creating an empty one;\n'aiosvc migrate --create' makes a new one.\n"
    )
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        log.warning("database_marker_not_written", path=str(path), error=str(exc))

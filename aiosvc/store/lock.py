"""One process per database: an exclusive ``flock`` on a lock file beside it.

Two daemons on one SQLite file would each recover the other's running replies and run its
queued ones again. The lock is taken before the database is opened and held until it is closed.
The kernel drops a ``flock`` with the last descriptor of its process, so a crashed holder never
blocks a restart; the PID written in the file only names the holder in the refusal, and each
new holder rewrites it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from aiosvc.store.errors import StoreError

#: A holder writes its PID right after locking; a reader that finds the file empty waits this
#: many times 10 ms for it before calling the holder unknown.
_PID_READS = 20


class DatabaseLocked(StoreError):
    """Another process holds the database's lock."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def lock_path(db: Path) -> Path:
    """The lock file of the database ``db``: ``<db>.lock`` beside it."""
    return db.with_name(db.name + ".lock")


class DatabaseLock:
    """The exclusive lock on one database file, for this process."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.path = lock_path(db)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Tell whether this process holds the lock through this object."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or raise :class:`DatabaseLocked` naming the holder's PID;
        create the database's folder and the lock file when missing. Idempotent."""
        if self._fd is not None:
            return
        try:
            self.db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.db}: cannot create its folder: {exc}") from None
        try:
            # not inherited by agents' processes (os.open's default): a child outliving the
            # daemon must not keep the lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"process {pid}" if pid is not None else "another process"
            raise DatabaseLocked(
                f"{self.db} is in use by {holder} (an aiosvc serve or migrate holds "
                f"{self.path}); stop it first, or use another database with --db",
                pid,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"{self.path}: cannot lock: {exc.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the PID is only informational; the lock is what counts
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with a new holder)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    """The PID the holder wrote, waiting briefly if it has just locked and not yet written."""
    for _ in range(_PID_READS):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None

"""Reading a project's ``TODO.md`` off the event loop, parsed once per version of the file.

The file is read and parsed in a worker thread (a 10 MB file takes a good fraction of a
second: the event loop goes on serving meanwhile). The parsed items are kept, keyed by the
file's identity, size and modification time, so reads of an unchanged file cost one ``stat``
(itself in a thread: the file may be on a slow or network disk).
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path

import attrs
import structlog

from aiosvc.models import ErrorInfo
from aiosvc.projects.todos import Checklist

log = structlog.get_logger(__name__)

FILE_NAME = "TODO.md"
#: A bigger file is not read (reported ``todos_too_large``): it bounds the memory a project's
#: todos take (the file's bytes, and about 17 bytes an item).
MAX_FILE_BYTES = 16 << 20

#: What identifies one version of a file: device, inode, size, modification time.
Version = tuple[int, int, int, int]


EMPTY = Checklist(b"")


@attrs.frozen
class TodoList:
    """A project's items, or why there are none to show (``error``, with an empty list)."""

    checklist: Checklist = EMPTY
    error: ErrorInfo | None = None


class TodoFiles:
    """Each project's parsed ``TODO.md``, read again only when the file changed."""

    def __init__(self) -> None:
        self._parsed: dict[Path, tuple[Version, TodoList]] = {}
        self._locks: dict[Path, asyncio.Lock] = {}

    async def read(self, directory: Path) -> TodoList:
        """The project's items as the file is now (an error instead when it cannot be read)."""
        path = directory / FILE_NAME
        # One reader per file at a time: concurrent requests after a change parse it once.
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            cached = self._parsed.get(path)
            try:
                version = await asyncio.to_thread(_version, path)
                if cached is not None and cached[0] == version:
                    return cached[1]
                version, checklist = await asyncio.to_thread(_load, path)
            except OSError as exc:
                self._parsed.pop(path, None)
                return TodoList(error=_describe(exc, path))
            except _TooLarge as exc:
                self._parsed.pop(path, None)
                return TodoList(error=ErrorInfo(code="todos_too_large", message=str(exc)))
            found = TodoList(checklist)
            self._parsed[path] = (version, found)
            return found

    def forget(self, keep: set[Path]) -> None:
        """Drop what is kept for files outside ``keep`` (projects no longer configured)."""
        for path in [p for p in self._parsed if p.parent not in keep]:
            del self._parsed[path]
        for path in [p for p, lock in self._locks.items() if p.parent not in keep]:
            if not self._locks[path].locked():
                del self._locks[path]


class _TooLarge(Exception):
    """The file is over :data:`MAX_FILE_BYTES`."""


def _version(path: Path) -> Version:
    found = os.stat(path)
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def _load(path: Path) -> tuple[Version, Checklist]:
    """Read and parse the file (in a worker thread); its version as of the read."""
    # O_NONBLOCK: a FIFO named TODO.md must not hang the thread in open()
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        found = os.fstat(f.fileno())
        if not stat.S_ISREG(found.st_mode):
            raise OSError(errno.EISDIR if stat.S_ISDIR(found.st_mode) else errno.EINVAL, "")
        if found.st_size > MAX_FILE_BYTES:
            raise _TooLarge(
                f"{FILE_NAME} is {found.st_size} bytes, over the limit of {MAX_FILE_BYTES}"
            )
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:  # it grew while being read
        raise _TooLarge(f"{FILE_NAME} is over the limit of {MAX_FILE_BYTES} bytes")
    version = (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
    return version, Checklist(data)


def _describe(exc: OSError, path: Path) -> ErrorInfo:
    """Why the file cannot be read, as the project's ``todos_error``."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return ErrorInfo(code="todos_missing", message=f"{path} does not exist")
    if exc.errno == errno.EISDIR:
        return ErrorInfo(code="todos_unreadable", message=f"{path} is a directory")
    if exc.errno == errno.EINVAL and not exc.strerror:
        return ErrorInfo(code="todos_unreadable", message=f"{path} is not a regular file")
    reason = exc.strerror or type(exc).__name__
    return ErrorInfo(code="todos_unreadable", message=f"{path} cannot be read: {reason}")

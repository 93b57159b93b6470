"""The log's way out: the process's stderr behind a buffer of our own, flushed at the end of
each line (or, for request lines, of the event loop's turn) and at exit."""

from __future__ import annotations

import atexit
import contextlib
import sys
from collections.abc import Callable
from typing import BinaryIO


class Stderr:
    """stderr's bytes behind a buffer of our own. Python leaves a redirected stderr unbuffered
    (one system call per line, as much as the rest of a request line cost); structlog and the
    stdlib handler flush after every line, request lines at the end of the event loop's
    turn, all through this one buffer so lines keep their order. (Not an io.BufferedWriter:
    over a seekable file that seeks to where it thinks it is, over whatever else wrote.)"""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.pending: list[bytes] = []
        #: Buffer bytes: the list's own append, so a line costs no Python call here.
        self.write: Callable[[bytes], object] = self.pending.append

    def flush(self) -> None:
        """Write out everything buffered."""
        if not self.pending:
            return
        view = memoryview(b"".join(self.pending))
        self.pending.clear()
        while view:  # a write to a pipe or file may take only part
            view = view[self.raw.write(view) or 0 :]
        self.raw.flush()


class TextStderr:
    """The text side of :class:`Stderr`, for the stdlib handler (a TextIOWrapper would warn
    about the process's stderr as an unclosed file when it is replaced)."""

    def __init__(self, binary: Stderr) -> None:
        self.binary = binary

    def write(self, text: str) -> int:
        """Encode and buffer ``text``."""
        self.binary.write(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def flush(self) -> None:
        """Write out everything buffered."""
        self.binary.flush()


_binary: Stderr | None = None


def buffer_stderr() -> tuple[Stderr, TextStderr] | None:
    """Put the current ``sys.stderr`` behind a :class:`Stderr` (None: it has no bytes side)."""
    global _binary
    raw = getattr(sys.stderr, "buffer", None)
    if raw is None:
        _binary = None
        return None
    _binary = Stderr(raw)
    return _binary, TextStderr(_binary)


@atexit.register
def _flush_at_exit() -> None:
    if _binary is not None:
        with contextlib.suppress(OSError, ValueError):
            _binary.flush()

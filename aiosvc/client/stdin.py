"""Lines typed (or piped) on standard input, without ever blocking the event loop.

A daemon thread does the blocking reads. It reads the raw file descriptor with ``os.read``,
not ``sys.stdin``: a thread still blocked in a read when the program exits then holds no
Python-level buffer lock the interpreter would need while it shuts down, and the descriptor's
mode is never changed (``connect_read_pipe`` would make a shared terminal non-blocking and
cannot read a regular file).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import select
import threading

CHUNK = 65536


class LineReader:
    """Reads lines from a file descriptor in a thread; :meth:`get` hands them to the loop."""

    def __init__(self, fd: int = 0) -> None:
        self.interrupted = False  # (Ctrl-C here is a signal: it never comes through a read)
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, name="aiosvc-chat-stdin", daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    async def get(self) -> str | None:
        """The next line without its line ending, or None at end of input."""
        return await self._lines.get()

    def _put(self, line: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            self._loop.call_soon_threadsafe(self._lines.put_nowait, line)

    def _read(self) -> bytes:
        while True:
            try:
                return os.read(self._fd, CHUNK)
            except BlockingIOError:  # someone left the descriptor non-blocking: wait for it
                select.select([self._fd], [], [])
            except OSError:
                return b""

    def _run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            while chunk := self._read():
                pending += decoder.decode(chunk)
                *lines, pending = pending.split("\n")
                for line in lines:
                    self._put(line.removesuffix("\r"))
            pending += decoder.decode(b"", final=True)
            if pending:
                self._put(pending.removesuffix("\r"))
        finally:
            self._put(None)

"""Lingering close: a connection we end while its client is still sending is not reset.

Closing a socket with unread data in it makes the kernel send a reset, and a client still
writing (an oversized WebSocket frame, a body we refused) then loses the answer or close
frame it was sent. So when a connection ends that way, its socket is kept for a moment: our
side of it is shut (the client sees the end after everything we wrote), and what the client
still sends is read and thrown away, into one shared buffer, until it closes its side or
:data:`LINGER_S` passes. Only so many sockets linger at once (each holds a descriptor);
past that a socket is closed at once.

How it keeps the socket: when asyncio tells the protocol the connection is lost
(``connection_lost``), the socket is still open (asyncio closes it right after the
callback); :meth:`Lingering.adopt` duplicates its descriptor then, so the connection lives on
in the duplicate when asyncio closes its own. That order is asyncio's, not a promise of its
API: the places that rely on it are marked ``# asyncio-internals:`` and
``tests/test_aiohttp_pins.py`` pins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import termios

import structlog

log = structlog.get_logger(__name__)

#: How long a closing connection's input is drained at most.
LINGER_S = 2.0
#: Sockets lingering at once, at most.
MAX_LINGERING = 256
_DISCARD = bytearray(64 * 1024)


def unread_bytes(fd: int) -> int:
    """How many received bytes wait in the socket unread (0 when it cannot be told)."""
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    count: int = struct.unpack("i", raw)[0]
    return count


class Lingering:
    """The sockets lingering now, each until its client closes or its time is up."""

    def __init__(self, limit: int = MAX_LINGERING, linger_s: float = LINGER_S) -> None:
        self.limit = limit
        self.linger_s = linger_s
        self._socks: dict[socket.socket, asyncio.TimerHandle] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._socks)

    # asyncio-internals: called from connection_lost, before asyncio closes the socket.
    def adopt(self, fd: int) -> bool:
        """Keep the connection on ``fd`` (about to be closed by asyncio) lingering; False when
        it cannot (too many lingering, the server stopping, the socket gone)."""
        if self._closed or len(self._socks) >= self.limit:
            return False
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            return False
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)  # the client sees the end after what we wrote
            loop = asyncio.get_running_loop()
            loop.add_reader(sock.fileno(), self._drain, sock)
        except (OSError, RuntimeError):
            sock.close()
            return False
        self._socks[sock] = loop.call_later(self.linger_s, self._end, sock)
        return True

    def _drain(self, sock: socket.socket) -> None:
        try:
            while True:
                if not sock.recv_into(_DISCARD):
                    break  # the client closed its side
        except BlockingIOError:
            return  # all read for now
        except OSError:
            pass  # reset by the client: nothing more to wait for
        self._end(sock)

    def _end(self, sock: socket.socket) -> None:
        timer = self._socks.pop(sock, None)
        if timer is None:
            return
        timer.cancel()
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()

    def close_all(self) -> None:
        """End every lingering socket now and adopt no more (the server is stopping)."""
        self._closed = True
        for sock in list(self._socks):
            self._end(sock)

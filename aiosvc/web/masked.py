"""Masked client frames only: RFC 6455 (5.1) says a server must close a WebSocket on which
the client sends a frame that is not masked; aiohttp's reader accepts them.

:class:`MaskedFramesOnly` sits between the connection and aiohttp's reader and reads only
frame headers. At the first unmasked frame it hands the reader, in its place, a frame with a
reserved opcode, which the reader refuses as a protocol error: aiohttp then closes with 1002
as it does for any other.

Coupling to aiohttp's internals (marked ``# aiohttp-internals:``, pinned by
``tests/test_aiohttp_pins.py``): aiohttp's WebSocket reader fails a frame with a reserved
opcode as a protocol error, with close code 1002.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# aiohttp-internals: a frame with a reserved opcode (3), which aiohttp's reader refuses as a
# protocol error (1002).
_PROTOCOL_ERROR_FRAME = b"\x83\x80\x00\x00\x00\x00"


class MaskedFramesOnly:
    """Feeds aiohttp's WebSocket reader, refusing the first frame that is not masked: the
    reader is given a frame it fails with 1002 in its place (RFC 6455, 5.1: a server must
    close on an unmasked frame). It reads only frame headers; payloads pass untouched."""

    __slots__ = ("_ext", "_ext_need", "_failed", "_failed_cb", "_held", "_reader", "_skip")

    def __init__(self, reader: Any, failed: Callable[[], None]) -> None:
        self._reader = reader
        self._failed_cb = failed
        self._skip = 0  # bytes of the current frame (mask key and payload) still to pass
        self._ext = bytearray()  # the extended payload length read so far
        self._ext_need = 0  # its size: 0, 2 or 8
        self._held = b""  # a frame's first byte, held until its second shows the mask bit
        self._failed = False

    def feed_eof(self) -> None:
        """The connection ended."""
        self._reader.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Pass ``data`` to the reader up to an unmasked frame, if any."""
        if self._failed:
            return True, b""
        if self._held:
            data, self._held = self._held + data, b""
        bad, hold = self._scan(data)
        if bad >= 0:
            self._failed = True
            if bad:
                self._reader.feed_data(data[:bad])  # the frames before it count
            result: tuple[bool, bytes] = self._reader.feed_data(_PROTOCOL_ERROR_FRAME)
            self._failed_cb()
            return result
        if hold:
            data, self._held = data[:-hold], data[-hold:]
            if not data:
                return False, b""
        result = self._reader.feed_data(data)
        if result[0]:  # the reader failed (too large, bad UTF-8...): aiohttp closes
            self._failed_cb()
        return result

    def _scan(self, data: bytes) -> tuple[int, int]:
        """Where the first unmasked frame starts in ``data`` (-1: none), and how many bytes
        at its end start a frame whose mask bit is not there yet."""
        pos, end, skip = 0, len(data), self._skip
        while pos < end:
            if skip:
                step = min(skip, end - pos)
                skip -= step
                pos += step
            elif self._ext_need:
                take = min(self._ext_need - len(self._ext), end - pos)
                self._ext += data[pos : pos + take]
                pos += take
                if len(self._ext) == self._ext_need:
                    skip = int.from_bytes(self._ext, "big") + 4  # and the mask key
                    self._ext_need = 0
                    self._ext.clear()
            elif end - pos < 2:
                self._skip = 0
                return -1, end - pos
            else:
                second = data[pos + 1]
                if not second & 0x80:
                    return pos, 0
                length = second & 0x7F
                pos += 2
                if length == 126:
                    self._ext_need = 2
                elif length == 127:
                    self._ext_need = 8
                else:
                    skip = length + 4
        self._skip = skip
        return -1, 0

"""Subscribers on bare non-blocking sockets, which give the kernel's arrival time of each read."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time

from fanout.subscribers import Recorder, SSEBody, Sub, masked_frame
from fanout.system import HOST

CRLF = b"\r\n"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value on most architectures
STAMP = struct.Struct("qq")
ANCILLARY = socket.CMSG_SPACE(STAMP.size)


class RawSub(Sub):
    """A subscriber on a bare non-blocking socket, read with ``recvmsg`` when readable.

    The event loop's selector says when to read; ``recvmsg`` gives the kernel's arrival time of
    the bytes (``SO_TIMESTAMPNS``).
    """

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder)
        self.sock: socket.socket | None = None
        self.port = 0
        self.reading = False
        self.bytes = 0

    def request(self) -> bytes:
        """The HTTP request that opens the stream."""
        raise NotImplementedError

    def feed(self, data: bytes, arrived: float, now: float) -> None:
        """Take bytes from the socket."""
        raise NotImplementedError

    async def open(self, port: int, rcvbuf: int = 0) -> None:
        """Connect, send the request, and wait until subscribed.

        With ``rcvbuf``, the socket's receive buffer is set to that size first.
        """
        self.port = port
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock = sock
        try:
            await loop.sock_connect(sock, (HOST, port))
            await loop.sock_sendall(sock, self.request())
        except OSError as exc:
            self.end(repr(exc))
            self.close()
            raise
        self.resume()
        await self.ready

    def resume(self) -> None:
        """Read whenever bytes arrive."""
        if self.sock is not None and not self.reading:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self.readable)
            self.reading = True

    def pause(self) -> None:
        """Stop reading (the kernel buffers fill, then the server's)."""
        if self.sock is not None and self.reading:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.reading = False

    def readable(self) -> None:
        """The selector's callback."""
        assert self.sock is not None
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 18, ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.end(f"connection lost ({exc!r})")
            self.close()
            return
        now = time.time()
        if not data:
            self.end("connection closed")
            self.close()
            return
        arrived = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = STAMP.unpack_from(value)
                arrived = seconds + nanoseconds * 1e-9
                break
        else:
            self.recorder.unstamped += 1
        self.bytes += len(data)
        self.feed(data, arrived, now)

    def send_text(self, payload: bytes) -> None:
        """Send a WebSocket text message."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.send(masked_frame(0x1, payload))  # tiny: fits the empty buffer

    def close(self) -> None:
        """Stop reading and close the socket."""
        self.pause()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class RawWS(RawSub):
    """A WebSocket subscriber: handshake, unmasked server frames, pongs."""

    kind = "ws"

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder)
        self.buffer = b""
        self.upgraded = False

    def request(self) -> bytes:
        """The upgrade request, with a fresh key."""
        key = base64.b64encode(os.urandom(16))
        return (
            b"GET /api/v1/ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (HOST.encode(), self.port, key)
        )

    def feed(self, data: bytes, arrived: float, now: float) -> None:
        """Take bytes: the upgrade answer, then frames; book events, answer pings."""
        buffer = self.buffer + data if self.buffer else data
        pos = 0
        if not self.upgraded:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.end(f"upgrade refused: {buffer.split(CRLF, 1)[0]!r}")
                self.close()
                return
            self.upgraded = True
            pos = head_end + 4
        size = len(buffer)
        while size - pos >= 2:
            opcode = buffer[pos] & 0x0F
            length = buffer[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                header = 10
            end = pos + header + length
            if end > size:
                break
            payload = buffer[pos + header : end]
            pos = end
            if opcode == 0x1:
                self.on_ws_text(payload, arrived, now)
            elif opcode == 0x9 and self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.send(masked_frame(0xA, payload))
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else None
                self.end(f"closed by the server ({self.close_code})")
        self.buffer = buffer[pos:]


class RawSSE(RawSub):
    """An SSE subscriber (HTTP/1.1, chunked or not)."""

    kind = "sse"

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder)
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.chunk_buffer = b""
        self.chunk_left = 0
        self.skip = 0
        self.body = SSEBody(self)

    def request(self) -> bytes:
        """The GET of the hooks' event stream."""
        return (
            b"GET /api/v1/events?topics=hooks HTTP/1.1\r\nHost: %s:%d\r\n"
            b"Accept: text/event-stream\r\n\r\n" % (HOST.encode(), self.port)
        )

    def feed(self, data: bytes, arrived: float, now: float) -> None:
        """Take bytes: the answer's head, then the body (de-chunked when chunked)."""
        if not self.in_body:
            head = self.head + data
            head_end = head.find(b"\r\n\r\n")
            if head_end < 0:
                self.head = head
                return
            if not head.startswith(b"HTTP/1.1 200"):
                self.end(f"refused: {head.split(CRLF, 1)[0]!r}")
                self.close()
                return
            self.in_body = True
            self.chunked = b"transfer-encoding: chunked" in head[:head_end].lower()
            data = head[head_end + 4 :]
            self.head = b""
        self.body.feed(self.dechunk(data) if self.chunked else data, arrived, now)

    def dechunk(self, data: bytes) -> bytes:
        """The payload bytes of chunked transfer coding, incrementally."""
        buffer = self.chunk_buffer + data if self.chunk_buffer else data
        pos, size = 0, len(buffer)
        out: list[bytes] = []
        while pos < size:
            if self.chunk_left:
                take = min(self.chunk_left, size - pos)
                out.append(buffer[pos : pos + take])
                pos += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.skip = 2
                continue
            if self.skip:
                take = min(self.skip, size - pos)
                pos += take
                self.skip -= take
                continue
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                break
            length = int(buffer[pos:line_end].split(b";", 1)[0], 16)
            pos = line_end + 2
            if length == 0:
                self.end("the stream ended")
                pos = size
                break
            self.chunk_left = length
        self.chunk_buffer = buffer[pos:]
        return b"".join(out)

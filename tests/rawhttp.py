"""Raw connections to a real server, for what a well-behaved client never does."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from typing import Any

import orjson

UPGRADE = (
    b"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def limits_config(tmp_path: Path, **limits: Any) -> Path:
    """A config file setting these ``[limits]``."""
    path = tmp_path / "aiosvc.toml"
    lines = [f"{key} = {value!r}" for key, value in limits.items()]
    path.write_text("[limits]\n" + "\n".join(lines) + "\n")
    return path


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to the server."""
    return await asyncio.open_connection("127.0.0.1", port)


async def until_closed(reader: asyncio.StreamReader, timeout: float = 30) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


def answer(data: bytes) -> tuple[int, dict[str, str], Any]:
    """An HTTP answer's status, headers (lower-cased names) and JSON body; the body must be
    exactly ``Content-Length`` long."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert len(body) == int(headers["content-length"]), data
    return int(status_line.split()[1]), headers, orjson.loads(body)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame: its opcode and payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


def client_frame(payload: bytes, *, masked: bool = True, opcode: int = 1) -> bytes:
    """A client frame (masked with a zero key when ``masked``: the payload is unchanged)."""
    length = len(payload)
    bit = 0x80 if masked else 0
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, bit | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, bit | 127, length)
    return head + (b"\0\0\0\0" if masked else b"") + payload


async def open_websocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket on ``/api/v1/ws``, past its hello."""
    reader, writer = await connect(port)
    writer.write(UPGRADE)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    opcode, hello = await read_frame(reader)
    assert opcode == 1 and orjson.loads(hello)["type"] == "hello"
    return reader, writer


def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a server log."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(orjson.loads(line))
    return lines


def vm_rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    """Descriptors the process holds."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


class Clock:
    """Seconds since it was made."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        """Seconds elapsed."""
        return time.monotonic() - self.start

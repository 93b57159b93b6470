"""Wire framing the streams write themselves: the same bytes aiohttp's own writers produce."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter

from aiosvc.web.frames import http_chunk, websocket_text


class Recorder(asyncio.Transport):
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += data

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.data += line

    def is_closing(self) -> bool:
        return False


class Protocol:
    """What the writer asks of the connection's protocol: whether writing is paused."""

    _paused = False


# Around each length boundary of RFC 6455: 7-bit, 16-bit and 64-bit lengths.
SIZES = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]


@pytest.mark.parametrize("size", SIZES)
async def test_a_text_frame_is_what_aiohttp_writes_for_an_uncompressed_server(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    transport = Recorder()
    writer = WebSocketWriter(Protocol(), transport, limit=1 << 30)  # type: ignore[arg-type]
    await writer.send_frame(payload, WSMsgType.TEXT)
    assert websocket_text(payload) == bytes(transport.data)


@pytest.mark.parametrize(
    ("data", "chunk"),
    [
        (b"id: 1\n\n", b"7\r\nid: 1\n\n\r\n"),
        (b"x" * 255, b"ff\r\n" + b"x" * 255 + b"\r\n"),
        (b"y" * 4096, b"1000\r\n" + b"y" * 4096 + b"\r\n"),
    ],
)
def test_a_chunk_carries_its_length_in_hex(data: bytes, chunk: bytes) -> None:
    assert http_chunk(data) == chunk

"""Wire framing the streams write themselves: the same bytes aiohttp's own writers produce
(the frames and chunks marked ``# aiohttp-internals:`` in aiosvc.web.frames, ws and sse)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_writer import StreamWriter
from multidict import CIMultiDict

from aiosvc.web.frames import http_chunk, websocket_text
from aiosvc.web.ws import uncompressed


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


@pytest.mark.parametrize("size", [1, 15, 16, 255, 256, 4096, 65_535, 65_536, 70_000])
async def test_a_chunk_is_what_aiohttp_writes_for_a_piece_of_a_chunked_body(size: int) -> None:
    transport = Recorder()
    protocol = BaseProtocol(asyncio.get_running_loop())
    protocol.connection_made(transport)
    writer = StreamWriter(protocol, asyncio.get_running_loop())
    writer.enable_chunking()
    await writer.write_headers("HTTP/1.1 200 OK", CIMultiDict({"Transfer-Encoding": "chunked"}))
    await writer.write(b"retry: 2000\n\n")  # the headers go out with the first piece
    transport.data.clear()
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    await writer.write(data)
    assert http_chunk(data) == bytes(transport.data)


def test_a_compressed_websocket_is_refused_for_direct_frames() -> None:
    plain = web.WebSocketResponse(compress=False)
    assert uncompressed(plain) is plain
    with pytest.raises(RuntimeError, match="cannot be compressed"):
        uncompressed(web.WebSocketResponse(compress=True))

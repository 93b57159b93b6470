"""Pins on what ``aiosvc.web.protocol``, ``server`` and ``linger`` rely on in aiohttp's and
asyncio's internals (each place is marked ``# aiohttp-internals:``): after an upgrade of
aiohttp, a failure here names what changed. Real aiohttp objects on real sockets throughout."""

from __future__ import annotations

import ast
import asyncio
import os
import stat
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode, web
from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_websocket import WebSocketError, WebSocketReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from aiosvc.web import masked
from aiosvc.web.masked import MaskedFramesOnly
from aiosvc.web.protocol import GuardedProtocol
from aiosvc.web.server import GuardedRunner, GuardedServer, make_runner


class Recorder(RequestHandler):
    """aiohttp's own request handler, noting the internals we read after each read."""

    seen: list[tuple[str, Any]]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.seen.append(("data", (self._request_count, self._upgraded)))

    def set_parser(self, parser: Any, data_received_cb: Any = None) -> None:
        self.seen.append(("set_parser", type(parser).__name__))
        super().set_parser(parser, data_received_cb)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        self.seen.append(("handle_error", type(exc).__mro__))
        return super().handle_error(request, status, exc, message)


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[int, list[tuple[str, Any]]]]:
    """A low-level aiohttp server whose connections are :class:`Recorder` s, and its port."""
    seen: list[tuple[str, Any]] = []

    async def handle(request: BaseRequest) -> web.StreamResponse:
        seen.append(("in_progress", request.protocol._request_in_progress))
        if request.headers.get("Upgrade") == "websocket":
            ws = web.WebSocketResponse(timeout=0.1)  # (no close frame comes back)
            await ws.prepare(request)
            await ws.close()
            return ws
        return web.Response(text="ok")

    server = web.Server(handle)
    loop = asyncio.get_running_loop()

    def factory() -> RequestHandler:
        handler = Recorder(server, loop=loop)
        handler.seen = seen
        return handler

    listening = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1], seen
    finally:
        listening.close()
        await server.shutdown(1)
        await listening.wait_closed()


async def exchange(port: int, *parts: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)  # one read per part on the server
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_request_count_counts_heads_as_they_complete(
    recorded: tuple[int, list[tuple[str, Any]]],
) -> None:
    port, seen = recorded
    await exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    counts = [value for kind, value in seen if kind == "data"]
    assert counts == [(0, False), (1, False), (2, False)]
    assert ("in_progress", True) in seen  # _request_in_progress while the handler runs


async def test_a_refused_head_is_counted_and_answered_through_handle_error(
    recorded: tuple[int, list[tuple[str, Any]]],
) -> None:
    port, seen = recorded
    answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01: y\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400")
    assert [value for kind, value in seen if kind == "data"] == [(1, False)]
    [mro] = [value for kind, value in seen if kind == "handle_error"]
    assert HttpProcessingError in mro


async def test_upgraded_holds_the_bytes_after_an_upgrade_until_set_parser(
    recorded: tuple[int, list[tuple[str, Any]]],
) -> None:
    port, seen = recorded
    await exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    assert seen[0] == ("data", (1, True))
    assert ("set_parser", "WebSocketReader") in seen


def websocket_reader() -> tuple[WebSocketReader, WebSocketDataQueue]:
    """aiohttp's WebSocket reader and the queue it fills (a protocol with no transport)."""
    loop = asyncio.get_running_loop()
    queue = WebSocketDataQueue(BaseProtocol(loop), 1 << 24, loop=loop)
    return WebSocketReader(queue, 1 << 20, compress=False, decode_text=True), queue


async def read_all(queue: WebSocketDataQueue) -> tuple[list[str], BaseException | None]:
    """The messages queued, and the error that ended the queue if any."""
    messages: list[str] = []
    while True:
        try:
            message = await asyncio.wait_for(queue.read(), 0.1)
        except TimeoutError:
            return messages, None
        except WebSocketError as exc:
            return messages, exc
        messages.append(message.data)


async def test_a_reserved_opcode_fails_the_websocket_reader_with_1002() -> None:
    reader, queue = websocket_reader()
    assert reader.feed_data(masked._PROTOCOL_ERROR_FRAME) == (True, b"")
    messages, error = await read_all(queue)
    assert messages == []
    assert isinstance(error, WebSocketError)
    assert error.code == WSCloseCode.PROTOCOL_ERROR


def frame(payload: bytes, *, masked: bool = True) -> bytes:
    """A client text frame, of any length (masked with a non-zero key when ``masked``)."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x81, length | (0x80 if masked else 0))
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126 | (0x80 if masked else 0), length)
    else:
        head = struct.pack("!BBQ", 0x81, 127 | (0x80 if masked else 0), length)
    if not masked:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("step", [1, 7, 4099])
async def test_masked_frames_pass_whole_however_the_reads_split_them(step: int) -> None:
    payloads = [b"a", b"b" * 125, b"c" * 126, b"d" * 300, b"e" * 70_000, b""]
    stream = b"".join(frame(p) for p in payloads)
    reader, queue = websocket_reader()
    calls: list[str] = []
    feeding = MaskedFramesOnly(reader, lambda: calls.append("failed"))
    for start in range(0, len(stream), step):
        assert feeding.feed_data(stream[start : start + step]) == (False, b"")
    assert await read_all(queue) == ([p.decode() for p in payloads], None)
    assert calls == []


@pytest.mark.parametrize("before", [0, 1, 2, 3])
async def test_an_unmasked_frame_fails_the_reader_after_the_frames_before_it(before: int) -> None:
    good = frame(b"first") + frame(b"second" * 30)
    stream = good + frame(b"bad", masked=False) + frame(b"x")
    reader, queue = websocket_reader()
    calls: list[str] = []
    feeding = MaskedFramesOnly(reader, lambda: calls.append("failed"))
    cut = len(good) - 2 + before  # reads that end around the bad frame's header
    assert feeding.feed_data(stream[:cut]) == (False, b"")
    assert feeding.feed_data(stream[cut:]) == (True, b"")
    assert feeding.feed_data(b"more") == (True, b"")
    messages, error = await read_all(queue)
    assert messages == ["first", "second" * 30]
    assert isinstance(error, WebSocketError)
    assert error.code == WSCloseCode.PROTOCOL_ERROR
    assert calls == ["failed"]


async def test_asyncio_reports_a_lost_connection_while_its_socket_is_still_open() -> None:
    """Lingering duplicates the socket in ``connection_lost``: asyncio must call it first
    and close the socket after."""
    seen: list[bool] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.fd = transport.get_extra_info("socket").fileno()
            transport.close()

        def connection_lost(self, exc: BaseException | None) -> None:
            seen.append(stat.S_ISSOCK(os.fstat(self.fd).st_mode))

    loop = asyncio.get_running_loop()
    listening = await loop.create_server(Probe, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(5):
        while not seen:
            await asyncio.sleep(0.01)
    writer.close()
    listening.close()
    await listening.wait_closed()
    assert seen == [True]


async def test_the_runner_s_server_is_the_sites_protocol_factory(config: Any) -> None:
    app = web.Application()
    app.router.add_get("/", ok)
    runner = make_runner(app, config)
    assert isinstance(runner, GuardedRunner)
    await runner.setup()
    try:
        assert isinstance(runner.server, GuardedServer)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        assert [type(c) for c in runner.server.connections] == [GuardedProtocol]
        writer.close()
    finally:
        await runner.cleanup()


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def test_every_module_that_relies_on_aiohttp_internals_lists_it_in_its_docstring() -> None:
    package = Path(__file__).resolve().parent.parent / "aiosvc"
    marked = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        if "# aiohttp-internals:" in text:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            marked.append((path.relative_to(package).as_posix(), "aiohttp-internals" in docstring))
    assert marked == [
        ("app.py", True),
        ("web/frames.py", True),
        ("web/masked.py", True),
        ("web/protocol.py", True),
        ("web/server.py", True),
        ("web/sse.py", True),
        ("web/ws.py", True),
    ]

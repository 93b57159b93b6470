"""Streams against a real ``aiosvc serve`` process: shutdown goodbyes and a stalled client."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from tests.serving import Server


def vm_rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (masked, with a zero key: payload XOR 0 is itself)."""
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + b"\0\0\0\0" + payload


def stalled_websocket(port: int, topics: list[str]) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that subscribes, then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(masked_text_frame(orjson.dumps({"op": "subscribe", "topics": topics})))
    return sock


async def test_shutdown_closes_websockets_1001_and_ends_sse_with_a_final_event(
    db_path: Path,
) -> None:
    server = Server(db_path)
    await server.start()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url + "/api/v1/ws")
        assert (await ws.receive_json())["type"] == "hello"
        sse = await http.get(server.url + "/api/v1/events")
        assert (await sse.content.readuntil(b"\n\n")) == b"retry: 2000\n\n"
        stopping = asyncio.create_task(server.stop(signal.SIGTERM))
        close = await asyncio.wait_for(ws.receive(), 20)
        assert close.type is WSMsgType.CLOSE
        assert (close.data, close.extra) == (1001, "server shutting down")
        rest = await asyncio.wait_for(sse.content.read(), 20)  # to the end of the stream
        block = rest.decode()
        assert block.startswith("event: shutdown\ndata: ")
        data = orjson.loads(block.split("data: ", 1)[1])
        assert data["topic"] == "system"
        assert data["data"] == {"reason": "the server is shutting down"}
        assert await stopping == 0
        await ws.close()
        sse.close()


async def test_a_stalled_client_is_dropped_without_slowing_others_or_growing_memory(
    db_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        "[events]\nbuffer_size = 50\n\n"
        "[streams]\noutbox_low_bytes = 16384\noutbox_high_bytes = 65536\n"
        "outbox_limit_bytes = 262144\n"
    )
    server = Server(db_path, config=config)
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    try:
        async with aiohttp.ClientSession() as http:
            healthy = await http.ws_connect(server.url + "/api/v1/ws", max_msg_size=0)
            await healthy.receive_json()
            await healthy.send_json({"op": "subscribe", "topics": ["hooks"], "id": 1})
            assert (await healthy.receive_json())["type"] == "ack"
            stalled = stalled_websocket(server.port, ["hooks"])
            await asyncio.sleep(0.2)
            before = vm_rss_kib(pid)
            pad = "z" * 60_000
            count = 800  # about 48 MB of events for a client that reads nothing
            received: list[int] = []

            async def read_all() -> None:
                while len(received) < count:
                    frame: dict[str, Any] = await healthy.receive_json()
                    if frame["type"] == "event":
                        received.append(frame["event"]["data"]["data"]["n"])

            reader = asyncio.create_task(read_all())
            for n in range(count):
                async with http.post(
                    server.url + "/api/v1/hooks",
                    json={"type": "bulk", "data": {"n": n, "pad": pad}},
                ) as response:
                    assert response.status == 202
            await asyncio.wait_for(reader, 60)
            assert received == list(range(count))  # the healthy client missed nothing
            grown_mib = (vm_rss_kib(pid) - before) / 1024
            assert grown_mib < 24, f"server grew {grown_mib:.1f} MiB for a stalled client"
            # The stalled client was let go: reading what reached it ends at end-of-stream.
            stalled.settimeout(20)
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            while stalled.recv(1 << 16):
                pass
            stalled.close()
            await healthy.close()
        assert '"event":"stream_client_too_slow"' in server.log()
    finally:
        assert await server.stop() == 0

"""How streams end, as a real ``aiosvc serve`` logs and counts it: one ``stream_closed`` line with
the reason and the duration, a request line with the status the stream really answered, the
slow client let go, events dropped told in bulk."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from prometheus_client.parser import text_string_to_metric_families

from tests.serving import Server

STREAM_CLOSED_KEYS = {
    "transport",
    "reason",
    "duration_s",
    "events_sent",
    "dropped",
    "event",
    "level",
    "logger",
    "timestamp",
    "request_id",
}


async def logged(server: Server, event: str, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
    """Wait (generously) until ``count`` lines of ``event`` with ``fields`` are in the log."""
    async with asyncio.timeout(20):
        while True:
            found = [
                line
                for line in server.events()
                if line["event"] == event and all(line.get(k) == v for k, v in fields.items())
            ]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


def request_line(server: Server, request_id: str) -> dict[str, Any]:
    """The request line of ``request_id``."""
    (line,) = [
        e for e in server.events() if e["event"] == "request" and e["request_id"] == request_id
    ]
    return line


async def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and labels."""
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def disconnects(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], reason: str
) -> float:
    return samples.get(("aiosvc_stream_disconnects_total", (("reason", reason),)), 0.0)


@pytest.fixture
async def server(db_path: Path, tmp_path: Path) -> AsyncIterator[Server]:
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        "[streams]\nheartbeat_s = 0.4\n\n"
        "[limits]\nmax_ws_frame_bytes = 1024\nws_messages_per_s = 0.5\nws_burst = 1\n"
    )
    served = Server(db_path, config=config)
    await served.start()
    yield served
    assert await served.stop() == 0


async def test_streams_closed_by_their_clients(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url + "/api/v1/ws", headers={"X-Request-ID": "ws-1"})
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_json({"op": "subscribe", "topics": ["hooks"]})
        assert (await ws.receive_json())["type"] == "ack"
        sse = await http.get(server.url + "/api/v1/events", headers={"X-Request-ID": "sse-1"})
        assert await sse.content.readuntil(b"\n\n") == b"retry: 2000\n\n"
        for n in range(3):
            async with http.post(server.url + "/api/v1/hooks", json={"type": f"t{n}"}) as posted:
                assert posted.status == 202
        for _ in range(3):
            assert (await ws.receive_json())["type"] == "event"
            assert (await sse.content.readuntil(b"\n\n")).startswith(b"id: ")
        await asyncio.sleep(0.3)
        await ws.close()
        sse.close()
        closed = await logged(server, "stream_closed", 2)
    by_transport = {line["transport"]: line for line in closed}
    for transport, rid in (("ws", "ws-1"), ("sse", "sse-1")):
        line = by_transport[transport]
        assert set(line) == STREAM_CLOSED_KEYS
        assert (line["reason"], line["events_sent"], line["dropped"]) == ("closed_by_client", 3, 0)
        assert (line["request_id"], line["level"]) == (rid, "info")
        assert 0.3 <= line["duration_s"] < 20
    await server.settled_log()
    # The request line tells the status the stream answered (not 499): the client's leaving
    # is in the stream_closed line.
    assert request_line(server, "ws-1")["status"] == 101
    assert request_line(server, "sse-1")["status"] == 200
    samples = await scrape(server)
    assert disconnects(samples, "closed_by_client") == 2


async def test_shutdown_ends_streams_as_server_shutdown(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url + "/api/v1/ws", headers={"X-Request-ID": "ws-2"})
        assert (await ws.receive_json())["type"] == "hello"
        sse = await http.get(server.url + "/api/v1/events", headers={"X-Request-ID": "sse-2"})
        await sse.content.readuntil(b"\n\n")
        stopping = asyncio.create_task(server.stop(signal.SIGTERM))
        assert (await asyncio.wait_for(ws.receive(), 20)).data == 1001
        assert b"event: shutdown" in await asyncio.wait_for(sse.content.read(), 20)
        assert await stopping == 0
        sse.close()
    closed = [e for e in server.events() if e["event"] == "stream_closed"]
    assert sorted((e["transport"], e["reason"], e["request_id"]) for e in closed) == [
        ("sse", "server_shutdown", "sse-2"),
        ("ws", "server_shutdown", "ws-2"),
    ]
    assert request_line(server, "ws-2")["status"] == 101
    assert request_line(server, "sse-2")["status"] == 200


def raw_websocket(port: int, request_id: str) -> socket.socket:
    """A WebSocket client on a bare socket: it answers nothing, pings included."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nX-Request-ID: " + request_id.encode() + b"\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_websocket_endings_say_why(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        # a frame over max_ws_frame_bytes: 1009
        big = await http.ws_connect(server.url + "/api/v1/ws", headers={"X-Request-ID": "big"})
        await big.receive_json()
        await big.send_str("x" * 2048)
        assert (await big.receive()).type is WSMsgType.CLOSE
        assert big.close_code == 1009
        # a binary frame: 1003
        binary = await http.ws_connect(server.url + "/api/v1/ws", headers={"X-Request-ID": "bin"})
        await binary.receive_json()
        await binary.send_bytes(b"\x00")
        assert (await binary.receive()).data == 1003
        # messages over the rate, many times in a row: 1008
        chatty = await http.ws_connect(server.url + "/api/v1/ws", headers={"X-Request-ID": "chat"})
        await chatty.receive_json()
        for _ in range(30):
            await chatty.send_json({"op": "ping"})
        while (message := await chatty.receive()).type is WSMsgType.TEXT:
            pass
        assert message.data == 1008
    # no pong to the heartbeat's ping (after 0.4 s, waited for 0.2 s)
    silent = await asyncio.to_thread(raw_websocket, server.port, "silent")
    try:
        lines = await logged(server, "stream_closed", request_id="silent")
    finally:
        silent.close()
    await logged(server, "stream_closed", 4)
    reasons = {
        e["request_id"]: e["reason"] for e in server.events() if e["event"] == "stream_closed"
    }
    assert reasons == {
        "big": "message_too_big",
        "bin": "protocol_error",
        "chat": "too_many_messages",
        "silent": "heartbeat_timeout",
    }
    assert lines[0]["duration_s"] >= 0.4
    samples = await scrape(server)
    for reason in set(reasons.values()):
        assert disconnects(samples, reason) == 1, reason


def stalled_sse(port: int, path: str, request_id: str) -> socket.socket:
    """An SSE client with a tiny receive buffer that reads only the response's head."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {request_id}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


async def test_a_client_too_slow_for_what_must_reach_it_is_let_go(
    db_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        "[streams]\noutbox_low_bytes = 16384\noutbox_high_bytes = 65536\n"
        "outbox_limit_bytes = 262144\n"
    )
    server = Server(db_path, config=config)
    await server.start()
    try:
        stalled = await asyncio.to_thread(
            stalled_sse, server.port, "/api/v1/events?topics=hooks", "slow-1"
        )
        pad = "z" * 60_000
        async with aiohttp.ClientSession() as http:
            for n in range(600):  # at most 36 MB; it stops when the server gives up
                async with http.post(
                    server.url + "/api/v1/hooks", json={"type": "bulk", "data": {"n": n, "p": pad}}
                ) as response:
                    assert response.status == 202
                if n % 20 == 0 and '"stream_client_too_slow"' in server.log():
                    break
        (slow,) = await logged(server, "stream_client_too_slow")
        assert (slow["transport"], slow["reason"], slow["request_id"]) == (
            "sse",
            "too_slow",
            "slow-1",
        )
        assert slow["level"] == "warning"
        # what was pending when it was let go: the limit minus less than one event
        assert 262_144 - 61_000 < slow["pending_bytes"] <= 262_144
        (closed,) = await logged(server, "stream_closed", request_id="slow-1")
        assert (closed["transport"], closed["reason"]) == ("sse", "too_slow")
        assert closed["events_sent"] == slow["events_sent"] > 0
        stalled.close()
        await server.settled_log()
        assert request_line(server, "slow-1")["status"] == 200
        assert disconnects(await scrape(server), "too_slow") == 1
    finally:
        assert await server.stop() == 0


MESSAGES = 10
DROPPED = re.compile(rb"event: dropped\ndata: (\{[^\n]*\})\n\n")


async def test_events_dropped_for_a_slow_client_are_told_in_bulk(
    db_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        "[streams]\noutbox_low_bytes = 1024\noutbox_high_bytes = 4096\n"
        "outbox_limit_bytes = 268435456\n"
    )
    server = Server(db_path, config=config)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "/api/v1/sessions", json={}) as response:
                sid = (await response.json())["data"]["id"]
            stalled = await asyncio.to_thread(
                stalled_sse, server.port, f"/api/v1/sessions/{sid}/events", "drops"
            )
            # 250 KB: 8 deltas of 31 KB. A client counts as behind only once the kernel holds
            # all it takes of the socket (MBs on loopback): 7.5 MB in all gets it there.
            text = " ".join(["word"] * 50_000)
            for _ in range(MESSAGES):
                async with http.post(
                    f"{server.url}/api/v1/sessions/{sid}/messages?wait=true",
                    json={"content": text},
                ) as response:
                    assert response.status == 200
        # now the client reads everything
        stream = b""
        stalled.settimeout(20)
        while stream.count(b"event: message.completed") < MESSAGES:
            stream += await asyncio.to_thread(stalled.recv, 1 << 20)
        stalled.settimeout(1)  # the last notice follows the last events it is about
        with contextlib.suppress(TimeoutError):
            while chunk := await asyncio.to_thread(stalled.recv, 1 << 20):
                stream += chunk
        stalled.close()
        told = sum(orjson.loads(m)["data"]["count"] for m in DROPPED.findall(stream))
        assert told > 0  # some deltas were skipped, and the client was told how many
        (closed,) = await logged(server, "stream_closed", request_id="drops")
        assert closed["dropped"] == told
        assert closed["events_sent"] == stream.count(b"\nid: ") + stream.startswith(b"id: ")
        # a line for the first notice, then at most one per 10 s: never one per event
        lines = [e for e in server.events() if e["event"] == "stream_events_dropped"]
        assert 1 <= len(lines) < told / 10
        line = lines[0]
        assert (line["transport"], line["request_id"], line["level"]) == ("sse", "drops", "warning")
        assert 0 < sum(e["count"] for e in lines) <= told
        samples = await scrape(server)
        assert samples[("aiosvc_stream_dropped_events_total", ())] == told
    finally:
        assert await server.stop() == 0

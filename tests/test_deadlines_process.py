"""Connections held to deadlines, WebSocket strictness and quiet parser errors, through a real
``aiosvc serve`` on a real socket (raw sockets where a well-behaved client would not do)."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import aiohttp

from tests.rawhttp import (
    UPGRADE,
    Clock,
    answer,
    client_frame,
    connect,
    limits_config,
    log_lines,
    open_websocket,
    read_frame,
    until_closed,
)
from tests.serving import Server

HEAD_TIMEOUT = {
    "error": {
        "code": "request_timeout",
        "message": "the request's headers did not arrive in time",
        "status": 408,
    }
}


async def slowloris(port: int, every_s: float = 0.25) -> tuple[float, bytes]:
    """A request whose headers come one line at a time, until the server ends it: when
    (seconds after connecting) and what it answered."""
    clock = Clock()
    reader, writer = await connect(port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    answered = asyncio.create_task(until_closed(reader))
    try:
        for n in range(200):
            done, _ = await asyncio.wait([answered], timeout=every_s)
            if done:
                return clock(), answered.result()
            writer.write(b"X-Line-%d: more\r\n" % n)
        raise AssertionError("never closed")
    finally:
        answered.cancel()
        writer.close()


async def test_slowloris_connections_are_closed_at_the_head_deadline(
    db_path: Path, tmp_path: Path
) -> None:
    config = limits_config(tmp_path, header_timeout_s=1.0, keepalive_timeout_s=30.0)
    server = Server(db_path, config=config)
    await server.start()
    try:
        results = await asyncio.gather(*(slowloris(server.port) for _ in range(20)))
        for elapsed, data in results:
            assert 0.9 <= elapsed < 5, elapsed
            status, headers, body = answer(data)
            assert (status, body) == (408, HEAD_TIMEOUT)
            assert headers["connection"] == "close"
            assert len(headers["x-request-id"]) == 16
        # A storm of them is a line, then a line with the count.
        lines = [line for line in log_lines(server.log()) if line["event"] == "connection_closed"]
        assert 1 <= len(lines) <= 2
        assert lines[0]["reason"] == "head_timeout"
        assert lines[0]["level"] == "info"
        async with (  # and the daemon answers as before
            aiohttp.ClientSession() as http,
            http.get(server.url + "/health") as response,
        ):
            assert response.status == 200
    finally:
        assert await server.stop() == 0


async def test_an_unfinished_websocket_handshake_is_closed_at_the_head_deadline(
    db_path: Path, tmp_path: Path
) -> None:
    config = limits_config(tmp_path, header_timeout_s=1.0, keepalive_timeout_s=30.0)
    server = Server(db_path, config=config)
    await server.start()
    try:
        clock = Clock()
        reader, writer = await connect(server.port)
        writer.write(UPGRADE[:-2])  # all but the blank line that ends the head
        status, _, body = answer(await until_closed(reader))
        assert 0.9 <= clock() < 5
        assert (status, body) == (408, HEAD_TIMEOUT)
        writer.close()
    finally:
        assert await server.stop() == 0


async def test_a_half_sent_body_is_answered_408_and_closed(db_path: Path, tmp_path: Path) -> None:
    config = limits_config(tmp_path, body_timeout_s=1.0)
    server = Server(db_path, config=config)
    await server.start()
    try:
        clock = Clock()
        reader, writer = await connect(server.port)
        writer.write(
            b"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"title": '
        )
        status, headers, body = answer(await until_closed(reader))
        assert 0.9 <= clock() < 5
        assert (status, body) == (
            408,
            {
                "error": {
                    "code": "request_timeout",
                    "message": "the request body did not arrive in time",
                    "status": 408,
                    "details": {"timeout_s": 1.0},
                }
            },
        )
        writer.close()
        async with (  # nothing was created
            aiohttp.ClientSession() as http,
            http.get(server.url + "/api/v1/sessions") as response,
        ):
            assert (await response.json())["total"] == 0
        lines = log_lines(await server.settled_log())
        [access] = [line for line in lines if line.get("status") == 408]
        assert access["request_id"] == headers["x-request-id"]
        assert access["route"] == "/api/v1/sessions"
        assert [line for line in lines if line["level"] == "error"] == []
    finally:
        assert await server.stop() == 0


async def test_idle_connections_are_closed_new_at_the_head_deadline_kept_alive_later(
    db_path: Path, tmp_path: Path
) -> None:
    config = limits_config(tmp_path, header_timeout_s=1.0, keepalive_timeout_s=3.0)
    server = Server(db_path, config=config)
    await server.start()
    try:
        # A new connection that never sends a byte: closed, without an answer.
        clock = Clock()
        reader, writer = await connect(server.port)
        assert await until_closed(reader) == b""
        assert 0.9 <= clock() < 2.9
        writer.close()
        # After an answer, waiting for the next request: the keep-alive timeout.
        reader, writer = await connect(server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        clock = Clock()
        rest = await until_closed(reader)
        assert b"\r\n\r\n" not in rest  # the body, and nothing after it
        assert 2.9 <= clock() < 8
        writer.close()
    finally:
        assert await server.stop() == 0


async def test_a_websocket_frame_over_the_limit_gets_close_1009_every_time(
    db_path: Path,
) -> None:
    server = Server(db_path)
    await server.start()
    frame = client_frame(b"x" * (2 * 1024 * 1024))
    try:
        outcomes = []
        for _ in range(20):
            reader, writer = await open_websocket(server.port)
            try:
                for start in range(0, len(frame), 65536):  # as a client would: while it can
                    writer.write(frame[start : start + 65536])
                    await writer.drain()
                opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
                outcomes.append((opcode, struct.unpack("!H", payload[:2])[0]))
                assert await until_closed(reader, 10) == b""
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                outcomes.append((0, type(exc).__name__))
            finally:
                writer.close()
        assert outcomes == [(8, 1009)] * 20
    finally:
        assert await server.stop() == 0


async def test_an_unmasked_client_frame_is_closed_with_1002(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    try:
        reader, writer = await open_websocket(server.port)
        writer.write(client_frame(b'{"op": "ping"}', masked=False))
        opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
        assert (opcode, struct.unpack("!H", payload[:2])[0]) == (8, 1002)
        assert await until_closed(reader, 10) == b""
        writer.close()
        # Masked frames are served as ever.
        reader, writer = await open_websocket(server.port)
        writer.write(client_frame(b'{"op": "ping", "id": 1}'))
        opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
        assert (opcode, payload) == (1, b'{"type":"ack","id":1,"data":{}}')
        writer.close()
    finally:
        assert await server.stop() == 0


SECRET = b"secret-value"
BAD_HEADER = b"\r\nBad\x01Header: x"
HOST = b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
NOT_HTTP = (400, "bad_request", "the request is not valid HTTP/1.1")
REFUSED = [
    (b"GET /api/v1/sessions" + HOST + b"X-API-Key: " + SECRET + BAD_HEADER, NOT_HTTP),
    (b"GET /api/v1/sessions" + HOST + b"Authorization: Bearer " + SECRET + BAD_HEADER, NOT_HTTP),
    (b"GET /api/v1/sessions" + HOST + b"Cookie: s=" + SECRET + BAD_HEADER, NOT_HTTP),
    (b"GET /api/v1/sessions" + HOST + b"Proxy-Authorization: " + SECRET + BAD_HEADER, NOT_HTTP),
    (b"GET /api/v1/events?token=" + SECRET + HOST + b"X-A: b" + BAD_HEADER, NOT_HTTP),
    (
        b"G\x01T /api/v1/events?token=" + SECRET + HOST + b"X-A: b",
        (400, "bad_request", "the request's method is not valid"),
    ),
    # A value over the field limit: aiohttp's error quotes its first 100 bytes.
    (
        b"GET /" + HOST + b"X-API-Key: " + SECRET + b"a" * 20_000,
        (431, "header_too_large", "a request line or header is over the size limit"),
    ),
]


async def test_requests_the_parser_refuses_keep_their_credentials_out_of_the_log(
    db_path: Path,
) -> None:
    server = Server(db_path, env={"AIOSVC_API_KEYS": SECRET.decode()})
    await server.start()
    try:
        request_ids = []
        for sent, (status, code, message) in REFUSED:
            reader, writer = await connect(server.port)
            writer.write(sent + b"\r\n\r\n")
            got, headers, body = answer(await until_closed(reader))
            writer.close()
            assert (got, body) == (
                status,
                {"error": {"code": code, "message": message, "status": status}},
            ), sent[:40]
            request_ids.append(headers["x-request-id"])
        log = await server.settled_log()
        assert SECRET.decode() not in log
        # One line names the first (the rest of a burst are counted in a later line).
        [line] = [line for line in log_lines(log) if line["event"] == "request_unparsable"]
        assert line == {
            "event": "request_unparsable",
            "request_id": request_ids[0],
            "status": 400,
            "error": "BadHttpMessage",
            "remote": "127.0.0.1",
            "level": "info",
            "logger": "aiosvc.web.protocol",
            "timestamp": line["timestamp"],
        }
        assert len(set(request_ids)) == len(REFUSED)
    finally:
        assert await server.stop() == 0


async def test_bodies_over_the_header_bound_are_served_on_a_kept_alive_connection(
    db_path: Path,
) -> None:
    config = db_path.with_name("aiosvc.toml")  # a hook event this big is allowed
    config.write_text("[limits]\nmax_event_bytes = 1048576\n")
    server = Server(db_path, config=config)
    await server.start()
    big = {"type": "bulk", "data": {"pad": "a" * 300_000}}  # ten times max_header_bytes
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
            for _ in range(3):
                async with http.post(server.url + "/api/v1/hooks", json=big) as response:
                    assert response.status == 202
                # answered before its body is read: the rest is read past, then the next
                async with http.post(
                    server.url + "/api/v1/sessions/ses_nope/messages",
                    json={"content": "a" * 300_000},
                ) as response:
                    assert response.status == 404
                async with http.get(server.url + "/health") as response:
                    assert response.status == 200
        assert "connection_closed" not in server.log()
    finally:
        assert await server.stop() == 0

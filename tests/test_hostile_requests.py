"""Hostile requests against a real ``aiosvc serve`` with a key: always a 4xx in the envelope,
never a 500, never a request that skips the front door, never a credential picked by chance."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from aiosvc.app import create_app
from aiosvc.config import Config
from aiosvc.web import system, ws_ops
from aiosvc.web.front_door import NO_ROUTE, FrontDoor
from aiosvc.web.security import AccessGate
from tests.conftest import ClientFactory
from tests.serving import Server

KEY = "k-hostile"
AUTH = {"X-API-Key": KEY}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A daemon with one API key and a small failed-authentication burst."""
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        f'[server]\napi_keys = ["{KEY}"]\n\n[limits]\nauth_failure_burst = 5\n'
        "auth_failures_per_s = 0.5\n"
    )
    running = Server(tmp_path / "aiosvc.db", config=config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def raw(server: Server, request: bytes) -> tuple[int, dict[str, str], Any]:
    """Send ``request`` as bytes on a new connection; the status, headers and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.strip().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


def http(method: str, path: str, *headers: bytes, body: bytes = b"") -> bytes:
    """A request as bytes: ``Host: localhost``, the headers given, then the body."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: localhost", *headers]
    if body:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def error(status: int, code: str, message: str, **details: Any) -> dict[str, Any]:
    """An error envelope."""
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = details
    return {"error": body}


async def no_tracebacks(server: Server) -> None:
    """Nothing a client sent was logged as a failure of the server."""
    log = await server.settled_log()
    assert "Traceback" not in log
    assert '"level":"error"' not in log


# ---- 9: client mistakes are 4xx


@pytest.mark.parametrize(
    "header",
    [b"X-API-Key: \xff\xfe-not-utf8", b"Authorization: Bearer \xc3\x28"],
    ids=["x-api-key", "authorization"],
)
async def test_a_key_that_is_not_utf8_is_401(server: Server, header: bytes) -> None:
    status, headers, body = await raw(server, http("GET", "/api/v1/sessions", header))
    assert (status, body) == (401, error(401, "unauthorized", "the API key is not valid"))
    assert headers["www-authenticate"] == "Bearer"
    await no_tracebacks(server)


@pytest.mark.parametrize("depth", [65, 255, 300, 1023])
async def test_json_nested_too_deep_is_400(server: Server, depth: int) -> None:
    nested = b"[" * (depth - 1) + b"]" * (depth - 1)
    body = b'{"type": "deep", "data": ' + nested + b"}"
    status, _, answer = await raw(
        server,
        http("POST", "/api/v1/hooks", b"X-API-Key: " + KEY.encode(), JSON_TYPE, body=body),
    )
    message = "the body is nested deeper than 64 levels"
    assert (status, answer) == (400, error(400, "invalid_json", message))
    await no_tracebacks(server)


async def test_json_nested_64_deep_is_accepted(server: Server) -> None:
    nested = b"[" * 63 + b"]" * 63
    body = b'{"type": "deep", "data": ' + nested + b"}"
    status, _, answer = await raw(
        server,
        http("POST", "/api/v1/hooks", b"X-API-Key: " + KEY.encode(), JSON_TYPE, body=body),
    )
    assert status == 202, answer


JSON_TYPE = b"Content-Type: application/json"


@pytest.mark.parametrize(
    "payload", [b'{"title": "not gzip"}', gzip.compress(b'{"title": "gzip"}')], ids=["bad", "ok"]
)
async def test_a_compressed_body_is_415_and_changes_nothing(server: Server, payload: bytes) -> None:
    status, _, answer = await raw(
        server,
        http(
            "POST",
            "/api/v1/sessions",
            b"X-API-Key: " + KEY.encode(),
            JSON_TYPE,
            b"Content-Encoding: gzip",
            body=payload,
        ),
    )
    message = "a request body must not be compressed (Content-Encoding)"
    assert (status, answer) == (415, error(415, "unsupported_media_type", message))
    async with (
        aiohttp.ClientSession(headers=AUTH) as client,
        client.get(server.url + "/api/v1/sessions") as response,
    ):
        assert (await response.json())["total"] == 0
    await no_tracebacks(server)


# ---- 10: after the upgrade, errors are frames


async def test_out_of_range_integers_in_websocket_ops_are_error_frames(server: Server) -> None:
    async with (
        aiohttp.ClientSession(headers=AUTH) as client,
        client.ws_connect(server.url + "/api/v1/ws") as ws,
    ):
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_str('{"op": "ping", "id": 18446744073709551615}')
        assert await ws.receive_json() == {
            "type": "error",
            "error": {
                "code": "validation_error",
                "message": "invalid field(s): id",
                "details": {
                    "fields": {
                        "id": "expected a string of at most 128 characters or a 64-bit integer"
                    }
                },
            },
        }
        await ws.send_str('{"op": "subscribe", "id": 1, "topics": ["hooks"], "since": 1e400}')
        frame = await ws.receive_json()
        # (the frame cannot be read, so neither can its id)
        assert (frame["type"], frame.get("id"), frame["error"]["code"]) == (
            "error",
            None,
            "invalid_json",
        )
        await ws.send_str(
            '{"op": "subscribe", "id": 2, "topics": ["hooks"], "since": 18446744073709551615}'
        )
        frame = await ws.receive_json()
        assert frame["error"]["details"] == {"fields": {"since": "expected a 64-bit integer"}}
        await ws.send_str('{"op": "ping", "id": 3}')
        assert await ws.receive_json() == {"type": "ack", "id": 3, "data": {}}
    await no_tracebacks(server)


# ---- 11: every request passes the front door


@pytest.mark.parametrize(
    "path",
    ["/x%0ay", "/%0a", "/api/v1/sessions/%0a", "/api/v1/sessions/a%0d%0ab", "/%00", "//", "/."],
)
async def test_odd_paths_get_the_envelope_and_the_checks(server: Server, path: str) -> None:
    status, headers, body = await raw(server, http("GET", path))
    assert status in (401, 404)
    assert body["error"]["status"] == status
    assert headers["x-request-id"]
    foreign = (await raw(server, http("GET", path).replace(b"localhost", b"evil.example")))[2]
    assert foreign["error"]["code"] == "forbidden_host"
    log = await server.settled_log()
    lines = [json.loads(line) for line in log.splitlines() if '"event":"request"' in line]
    assert lines[-1]["status"] == 403


# ---- 12: two credentials that disagree


@pytest.mark.parametrize(
    "headers",
    [
        [b"X-API-Key: " + KEY.encode(), b"X-API-Key: wrong"],
        [b"X-API-Key: wrong", b"X-API-Key: " + KEY.encode()],
        [b"X-API-Key: " + KEY.encode(), b"Authorization: Bearer wrong"],
    ],
    ids=["valid-first", "valid-second", "both-kinds"],
)
async def test_two_credentials_that_disagree_are_401(server: Server, headers: list[bytes]) -> None:
    status, _, body = await raw(server, http("GET", "/api/v1/sessions", *headers))
    message = "the request carries two different API keys"
    assert (status, body) == (401, error(401, "unauthorized", message))


async def test_the_same_key_twice_is_fine(server: Server) -> None:
    both = [b"X-API-Key: " + KEY.encode(), b"Authorization: Bearer " + KEY.encode()]
    status, _, _ = await raw(server, http("GET", "/api/v1/sessions", *both))
    assert status == 200


async def test_a_header_key_and_a_different_query_token_are_401(server: Server) -> None:
    async with (
        aiohttp.ClientSession(headers=AUTH) as client,
        client.get(server.url + "/api/v1/events?token=other") as response,
    ):
        assert response.status == 401


# ---- 14: Host parsed strictly


@pytest.mark.parametrize(
    "host",
    # (whitespace around the value is not part of it: RFC 9110 strips it, and so does aiohttp)
    [b"[::1]evil.com", b"127.0.0.1:evil", b"localhost:", b"local host", b"localhost\\x", b"@x"],
)
async def test_a_malformed_host_is_403(server: Server, host: bytes) -> None:
    request = http("GET", "/api/v1/sessions", b"X-API-Key: " + KEY.encode())
    status, _, body = await raw(server, request.replace(b"Host: localhost", b"Host: " + host))
    assert status in (400, 403)  # aiohttp's parser refuses some outright
    if status == 403:
        assert body["error"]["code"] == "forbidden_host"


@pytest.mark.parametrize("host", [b"localhost", b"LOCALHOST:8420", b"127.0.0.1:1", b"[::1]:9"])
async def test_well_formed_loopback_hosts_pass(server: Server, host: bytes) -> None:
    request = http("GET", "/api/v1/sessions", b"X-API-Key: " + KEY.encode())
    status, _, _ = await raw(server, request.replace(b"Host: localhost", b"Host: " + host))
    assert status == 200


# ---- 15: a foreign page cannot open an event stream


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
async def test_sse_from_a_foreign_origin_is_403(server: Server, origin: str) -> None:
    headers = {**AUTH, "Origin": origin}
    async with (
        aiohttp.ClientSession(headers=headers) as client,
        client.get(server.url + "/api/v1/events") as response,
    ):
        assert response.status == 403
        body = await response.json()
    assert body == error(403, "forbidden_origin", f"origin {origin!r} is not allowed")


# ---- 16: failed authentication is throttled per address


async def test_failed_authentications_are_throttled_with_retry_after(server: Server) -> None:
    async with aiohttp.ClientSession() as client:
        statuses = []
        for n in range(8):
            headers = {"X-API-Key": f"guess-{n}"}
            async with client.get(server.url + "/api/v1/sessions", headers=headers) as response:
                statuses.append(response.status)
                retry_after = response.headers.get("Retry-After")
        assert statuses == [401] * 5 + [429] * 3
        assert retry_after is not None and 1 <= int(retry_after) <= 2
        async with client.get(server.url + "/health") as response:
            assert response.status == 200  # needs no key: never throttled
        await asyncio.sleep(int(retry_after) + 0.2)
        async with client.get(server.url + "/api/v1/sessions", headers=AUTH) as response:
            assert response.status == 200


# ---- 17: headers of every answer


async def test_answers_are_not_cached_and_name_no_versions(server: Server) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as client:
        for path in ("/api/v1/sessions", "/health", "/nowhere"):
            async with client.get(server.url + path) as response:
                assert response.headers["Cache-Control"] == "no-store"
                assert response.headers["Server"] == "aiosvc"
        async with client.get(server.url + "/api/v1/events") as response:
            assert response.headers["Cache-Control"] == "no-cache"  # SSE sets its own
            assert response.headers["Server"] == "aiosvc"


# ---- the front door guards every route (in-process: the router as the app builds it)


def test_every_route_is_registered_behind_the_front_door(config: Config) -> None:
    app = create_app(config)
    routes = list(app.router.routes())
    assert routes[-1].name == NO_ROUTE  # the catch-all comes last: it shadows nothing
    for route in routes:
        handler = route.handler
        assert isinstance(handler, functools.partial), route
        assert getattr(handler.func, "__func__", None) is FrontDoor.serve, route


def test_the_front_door_refuses_a_router_that_already_has_routes(config: Config) -> None:
    async def early(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/early", early)
    door = FrontDoor(config.limits, AccessGate(config.server))
    with pytest.raises(RuntimeError, match="already has routes, which no check would guard"):
        door.add_routes(app.router, [system.routes])
    assert [route.handler for route in app.router.routes()] == [early, early]  # HEAD, GET


async def test_an_op_that_fails_unexpectedly_answers_an_error_frame(
    aiohttp_client: ClientFactory, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(stream: object, frame: object, client_id: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setitem(ws_ops.OPS, "ping", attrs.evolve(ws_ops.OPS["ping"], handler=broken))
    client = await aiohttp_client(create_app(config))
    async with client.ws_connect("/api/v1/ws") as socket:
        assert (await socket.receive_json())["type"] == "hello"
        await socket.send_str('{"op": "ping", "id": 1}')
        assert await socket.receive_json() == {
            "type": "error",
            "error": {
                "code": "internal_error",
                "message": "the server failed to handle this message",
            },
        }
        await socket.send_str('{"op": "unsubscribe", "id": 2, "topics": []}')
        assert await socket.receive_json() == {"type": "ack", "id": 2, "data": {"topics": []}}

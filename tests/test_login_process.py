"""The browser login against a real ``aiosvc serve``: the cookie, the failed-sign-in throttle,
the CSRF rule, sign-out, restarts, expiry, and an EventSource that reconnects on its own."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.serving import Server

KEY = "the-first-key-0123456789"
OTHER_KEY = "the-other-key-0123456789"
JSON = {"Content-Type": "application/json"}
COOKIE_RE = re.compile(r"aiosvc_session=([A-Za-z0-9_-]{43})")


def write_config(path: Path, *, keys: tuple[str, ...] = (KEY,), extra: str = "") -> Path:
    """A config file with these keys (and a strict failed-sign-in throttle)."""
    listed = ", ".join(f'"{k}"' for k in keys)
    path.write_text(
        f"[server]\napi_keys = [{listed}]\n{extra}\n"
        "[limits]\nmax_body_bytes = 1024\nauth_failure_burst = 3\nauth_failures_per_s = 0.01\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps no cookies: each request states its own."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def start(db_path: Path, config: Path, port: int | None = None) -> Server:
    server = Server(db_path, config=config, port=port)
    await server.start()
    return server


async def sign_in(http: aiohttp.ClientSession, server: Server, key: str = KEY) -> str:
    """Sign in; the cookie's token."""
    async with http.post(server.url + "/api/v1/login", json={"key": key}) as response:
        assert response.status == 204, await response.text()
        match = COOKIE_RE.fullmatch(response.headers["Set-Cookie"].split(";")[0])
        assert match is not None
        return match.group(1)


def cookie(token: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"aiosvc_session={token}", **headers}


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["status"] == response.status
    assert set(error) <= {"code", "message", "status", "details"}
    return error


async def state(http: aiohttp.ClientSession, server: Server, **headers: str) -> dict[str, Any]:
    async with http.get(server.url + "/api/v1/login", headers=headers) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        assert set(body) == {"data"}
        data: dict[str, Any] = body["data"]
        return data


async def test_signing_in_sets_the_cookie_which_authenticates_like_a_key(
    db_path: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await start(db_path, write_config(tmp_path / "aiosvc.toml"))
    try:
        async with http.post(server.url + "/api/v1/login", json={"key": KEY}) as response:
            assert response.status == 204
            assert await response.read() == b""
            assert len(response.headers.getall("Set-Cookie")) == 1
            name_value, *attributes = response.headers["Set-Cookie"].split("; ")
            assert COOKIE_RE.fullmatch(name_value)
            assert sorted(attributes) == ["HttpOnly", "Path=/", "SameSite=Strict"]  # no Secure
            assert response.headers["Cache-Control"] == "no-store"
        token = COOKIE_RE.fullmatch(name_value).group(1)  # type: ignore[union-attr]
        async with http.get(server.url + "/api/v1/sessions", headers=cookie(token)) as response:
            assert response.status == 200
            assert (await response.json())["data"] == []
        async with http.get(server.url + "/api/v1/sessions") as response:
            assert response.status == 401
            assert (await error_of(response))["code"] == "unauthorized"
        async with http.get(server.url + "/api/v1/sessions", headers=cookie("x" * 43)) as response:
            assert response.status == 401
            assert (await error_of(response))["code"] == "unauthorized"
        signed_in = await state(http, server, **cookie(token))
        assert signed_in["authenticated"] is True
        expires = time.mktime(time.strptime(signed_in["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert abs(expires - time.mktime(time.gmtime()) - 7 * 86400) < 60
        assert signed_in["expires_at"].endswith("Z")
        assert await state(http, server) == {"authenticated": False, "expires_at": None}
        assert await state(http, server, **{"X-API-Key": KEY}) == {
            "authenticated": True,
            "expires_at": None,
        }
        assert await state(http, server, **cookie("nope")) == {
            "authenticated": False,
            "expires_at": None,
        }
        # A ticket asked for with the cookie opens a stream like one asked for with a key
        headers = cookie(token, Origin=server.url)
        async with http.post(server.url + "/api/v1/tickets", headers=headers) as response:
            assert response.status == 201
    finally:
        await server.stop()


async def test_wrong_keys_are_401_then_429_and_bodies_are_checked(
    db_path: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await start(db_path, write_config(tmp_path / "aiosvc.toml"))
    url = server.url + "/api/v1/login"
    try:
        async with http.post(url, data=b'{"key": "k"}') as response:
            assert response.status == 415
            assert (await error_of(response))["code"] == "unsupported_media_type"
        async with http.post(url, data=b"{", headers=JSON) as response:
            assert response.status == 400
            assert (await error_of(response))["code"] == "invalid_json"
        async with http.post(url, json={"kee": KEY}) as response:
            assert response.status == 400
            assert (await error_of(response))["code"] == "validation_error"
        async with http.post(url, data=b'{"key": "' + b"k" * 2000 + b'"}', headers=JSON) as r:
            assert r.status == 413
            assert (await error_of(r))["code"] == "payload_too_large"
        for _ in range(3):  # the burst of failures the config allows
            async with http.post(url, json={"key": "wrong"}) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert "Set-Cookie" not in response.headers
                error = await error_of(response)
                assert error == {
                    "code": "unauthorized",
                    "message": "the API key is not valid",
                    "status": 401,
                }
        for key in ("wrong", KEY):  # past the burst even the right key waits
            async with http.post(url, json={"key": key}) as response:
                assert response.status == 429
                assert int(response.headers["Retry-After"]) >= 1
                assert "Set-Cookie" not in response.headers
                assert (await error_of(response))["code"] == "rate_limited"
        # the same throttle as wrong keys on any route
        async with http.get(server.url + "/api/v1/sessions", headers={"X-API-Key": KEY}) as r:
            assert r.status == 429
    finally:
        await server.stop()


async def test_without_keys_signing_in_sets_no_cookie(
    db_path: Path, http: aiohttp.ClientSession
) -> None:
    server = Server(db_path)
    await server.start()
    try:
        async with http.post(server.url + "/api/v1/login", json={"key": "any"}) as response:
            assert response.status == 204
            assert "Set-Cookie" not in response.headers
        async with http.post(server.url + "/api/v1/login", json={}) as response:
            assert response.status == 400
        assert await state(http, server) == {"authenticated": True, "expires_at": None}
    finally:
        await server.stop()


async def test_a_write_by_the_cookie_alone_needs_an_allowed_origin(
    db_path: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await start(db_path, write_config(tmp_path / "aiosvc.toml"))
    url = server.url + "/api/v1/sessions"
    try:
        token = await sign_in(http, server)
        async with http.post(url, json={}, headers=cookie(token)) as response:
            assert response.status == 403
            assert (await error_of(response))["code"] == "forbidden_origin"
        for foreign in ("http://evil.example", "null", f"http://localhost:{server.port}"):
            async with http.post(url, json={}, headers=cookie(token, Origin=foreign)) as response:
                assert response.status == 403
                assert (await error_of(response))["code"] == "forbidden_origin"
        async with http.post(url, json={}, headers=cookie(token, Origin=server.url)) as response:
            assert response.status == 201
            assert response.headers["Access-Control-Allow-Origin"] == server.url
        async with http.post(url, json={}, headers={"X-API-Key": KEY}) as response:
            assert response.status == 201  # a key in a header is no browser's: no Origin needed
        async with http.get(url, headers=cookie(token)) as response:
            assert response.status == 200  # reads need no Origin
            assert (await response.json())["total"] == 2
        # WebSocket upgrades by cookie: an allowed Origin, or refused before the upgrade
        ws_url = server.url + "/api/v1/ws"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url, headers=cookie(token))
        assert refused.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url, headers=cookie(token), origin="http://evil.example")
        assert refused.value.status == 403
        async with http.ws_connect(ws_url, headers=cookie(token), origin=server.url) as ws:
            assert (await ws.receive_json())["type"] == "hello"
            await ws.send_json({"op": "subscribe", "topics": ["sessions"], "id": "s"})
            assert (await ws.receive_json())["type"] == "ack"
            async with http.post(url, json={"title": "seen"}, headers={"X-API-Key": KEY}) as r:
                assert r.status == 201
            frame = await ws.receive_json()
            assert frame["event"]["type"] == "session.created"
            assert frame["event"]["data"]["title"] == "seen"
        async with http.ws_connect(
            server.url + f"/api/v1/sessions/{frame['event']['data']['id']}/ws",
            headers=cookie(token),
            origin=server.url,
        ) as ws:
            assert (await ws.receive_json())["type"] == "hello"
    finally:
        await server.stop()


async def test_signing_out_revokes_the_login_and_clears_the_cookie(
    db_path: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await start(db_path, write_config(tmp_path / "aiosvc.toml"))
    try:
        token = await sign_in(http, server)
        kept = await sign_in(http, server)  # another browser's login stays
        url = server.url + "/api/v1/logout"
        async with http.post(url, headers=cookie(token)) as response:
            assert response.status == 403  # CSRF: a page elsewhere cannot sign the user out
        async with http.post(url, headers=cookie(token, Origin=server.url)) as response:
            assert response.status == 204
            name_value, *attributes = response.headers["Set-Cookie"].split("; ")
            assert name_value in ('aiosvc_session=""', "aiosvc_session=")
            assert "Max-Age=0" in attributes
            assert {"HttpOnly", "Path=/", "SameSite=Strict"} <= set(attributes)
        async with http.get(server.url + "/api/v1/sessions", headers=cookie(token)) as response:
            assert response.status == 401
        assert (await state(http, server, **cookie(token)))["authenticated"] is False
        async with http.get(server.url + "/api/v1/sessions", headers=cookie(kept)) as response:
            assert response.status == 200
        async with http.post(url) as response:  # signed out already: still 204
            assert response.status == 204
        rows = await server_rows(db_path)
        assert len(rows) == 1  # the revoked login is deleted; the kept one is hashed
        assert token not in str(rows) and kept not in str(rows)
    finally:
        await server.stop()


async def server_rows(db_path: Path) -> list[tuple[Any, ...]]:
    """The logins table as the file has it (read beside the running server, as SQLite lets)."""
    import sqlite3

    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        return list(conn.execute("SELECT id, key_id, created_at, last_used_s FROM logins"))


async def test_a_login_survives_a_restart_and_ends_with_its_key(
    db_path: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = write_config(tmp_path / "aiosvc.toml", keys=(KEY, OTHER_KEY))
    server = await start(db_path, config)
    token = await sign_in(http, server, OTHER_KEY)
    server.kill()  # no chance to write anything more
    server = await start(db_path, config, port=server.port)
    try:
        async with http.get(server.url + "/api/v1/sessions", headers=cookie(token)) as response:
            assert response.status == 200
        write_config(config, keys=(KEY,))  # the key it signed in with is removed
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        for _ in range(100):
            async with http.get(server.url + "/api/v1/sessions", headers=cookie(token)) as r:
                if r.status == 401:
                    break
            await asyncio.sleep(0.05)
        assert r.status == 401
    finally:
        await server.stop()


async def test_a_login_unused_for_its_lifetime_expires(
    db_path: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = write_config(tmp_path / "aiosvc.toml", extra="login_ttl_s = 3.0")
    server = await start(db_path, config)
    url = server.url + "/api/v1/sessions"
    try:
        token = await sign_in(http, server)
        for _ in range(5):  # used every second: the lifetime slides
            await asyncio.sleep(1)
            async with http.get(url, headers=cookie(token)) as response:
                assert response.status == 200
        await asyncio.sleep(3.5)
        async with http.get(url, headers=cookie(token)) as response:
            assert response.status == 401
            assert (await error_of(response))["message"] == (
                "the login is unknown or expired: sign in again"
            )
        assert (await state(http, server, **cookie(token)))["authenticated"] is False
    finally:
        await server.stop()


async def read_event(stream: aiohttp.StreamReader) -> dict[str, str]:
    """The next SSE event's fields (comments and the retry line skipped)."""
    while True:
        block = (await asyncio.wait_for(stream.readuntil(b"\n\n"), 20)).decode()
        fields = dict(line.split(": ", 1) for line in block.strip().split("\n") if ": " in line)
        if "event" in fields or "id" in fields:
            return fields


async def test_an_event_source_with_the_cookie_resumes_after_a_restart(
    db_path: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = write_config(tmp_path / "aiosvc.toml")
    server = await start(db_path, config)
    token = await sign_in(http, server)
    keyed = {"X-API-Key": KEY}
    events = server.url + "/api/v1/events?topics=sessions"
    async with http.get(events, headers=cookie(token)) as sse:
        assert sse.status == 200
        assert sse.headers["Content-Type"].startswith("text/event-stream")
        async with http.post(server.url + "/api/v1/sessions", json={}, headers=keyed) as r:
            assert r.status == 201
        first = await read_event(sse.content)
        assert first["event"] == "session.created"
        await server.stop()
    server = await start(db_path, config, port=server.port)
    try:
        # The EventSource's retry: the same URL and cookie, and the last id it saw
        resumed = cookie(token, **{"Last-Event-ID": first["id"]})
        async with http.get(events, headers=resumed) as sse:
            assert sse.status == 200
            async with http.post(server.url + "/api/v1/sessions", json={}, headers=keyed) as r:
                assert r.status == 201
                created = (await r.json())["data"]
            # an id from before the restart: one reset (the page refetches), then live events
            assert (await read_event(sse.content))["event"] == "reset"
            latest = await read_event(sse.content)
            assert latest["event"] == "session.created"
            assert orjson.loads(latest["data"])["data"]["id"] == created["id"]
            assert int(latest["id"]) > int(first["id"])
        # and the session's own stream takes the cookie too
        own = server.url + f"/api/v1/sessions/{created['id']}/events"
        async with http.get(own, headers=cookie(token)) as sse:
            assert sse.status == 200
            assert await asyncio.wait_for(sse.content.readuntil(b"\n\n"), 20) == b"retry: 2000\n\n"
    finally:
        await server.stop()

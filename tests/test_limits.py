"""Limits, each with its error, through a real server; and bad input that must never be a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
from aiohttp import WSMsgType, WSServerHandshakeError

from aiosvc.app import create_app
from aiosvc.config import Config
from tests.conftest import ClientFactory
from tests.helpers import Client, create_session


def limited(config: Config, **limits: Any) -> Config:
    return attrs.evolve(config, limits=attrs.evolve(config.limits, **limits))


async def test_writes_are_rate_limited_with_retry_after(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await aiohttp_client(create_app(limited(config, write_rate_per_s=1, write_burst=3)))
    statuses = [(await client.post("/api/v1/sessions", json={})).status for _ in range(3)]
    assert statuses == [201, 201, 201]
    response = await client.post("/api/v1/sessions", json={})
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"] == {
        "code": "rate_limited",
        "message": "too many writes: slow down",
        "status": 429,
    }
    assert (await client.get("/api/v1/sessions")).status == 200  # reads are not limited
    assert (await (await client.get("/api/v1/sessions")).json())["total"] == 3


async def test_websocket_message_rate_errors_then_close_1008(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    client = await aiohttp_client(create_app(limited(config, ws_messages_per_s=1, ws_burst=2)))
    async with client.ws_connect("/api/v1/ws") as ws:
        await ws.receive_json()
        for n in range(2):
            await ws.send_json({"op": "ping", "id": n})
            assert (await ws.receive_json())["type"] == "ack"
        await ws.send_json({"op": "ping", "id": 9})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "rate_limited", "message": "too many messages: slow down"},
        }
        for _ in range(30):
            await ws.send_json({"op": "ping"})
        kinds = []
        while True:
            message = await asyncio.wait_for(ws.receive(), 10)
            if message.type is not WSMsgType.TEXT:
                break
            kinds.append(message.json()["type"])
        assert set(kinds) == {"error"}
        assert (message.type, message.data) == (WSMsgType.CLOSE, 1008)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"title": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_json"),  # deep nesting
        (b'{"title": "\\ud800"}', "invalid_json"),  # a lone surrogate
        (b'{"title": "\xff\xfe"}', "invalid_json"),  # invalid UTF-8
        (b'{"title": "a\\u0000b"}', "validation_error"),  # NUL
        (b'{"title": 1e999}', "invalid_json"),
        (b'{"title": 123456789012345678901234567890}', "validation_error"),  # huge integer
        (b'{"title": "x", "title": "y"}', "invalid_json"),  # duplicate keys
        (b'{"title": "x"} trailing', "invalid_json"),
        (b"", "missing_body"),
    ],
)
async def test_bad_bodies_are_400_and_change_nothing(client: Client, raw: bytes, code: str) -> None:
    response = await client.post(
        "/api/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["code"] == code
    assert (await (await client.get("/api/v1/sessions")).json())["total"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sessions/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/sessions/x';DROP TABLE sessions;--",
        "/api/v1/sessions/%00",
        "/api/v1/sessions/" + "a" * 65,
        "/api/v1/commands/%F0%9F%92%A9",
        "/api/v1/sessions?status=DROP",
        "/api/v1/sessions?limit=1e3",
        "/api/v1/sessions?offset=99999999999999999999",
        "/api/v1/approvals?status=%00",
        "/api/v1/sessions?project=" + "p" * 300,
    ],
)
async def test_hostile_paths_and_queries_are_4xx(client: Client, path: str) -> None:
    await create_session(client)
    response = await client.get(path)
    assert 400 <= response.status < 500, path
    assert set(await response.json()) == {"error"}
    assert (await (await client.get("/api/v1/sessions")).json())["total"] == 1


async def test_ws_frames_with_hostile_content_get_error_frames(client: Client) -> None:
    async with client.ws_connect("/api/v1/ws") as ws:
        await ws.receive_json()
        for raw in (
            '{"op": "subscribe", "topics": "hooks"}',
            '{"op": ["x"]}',
            '{"op": "ping", "id": {"a": 1}}',
            "[" * 3000,
            '"\\ud800"',
            '{"op": "subscribe", "topics": ["session:../x"]}',
            '{"op": "send_message", "session_id": 5, "content": "x"}',
        ):
            await ws.send_str(raw)
            frame = await asyncio.wait_for(ws.receive_json(), 10)
            assert frame["type"] == "error", raw
        await ws.send_json({"op": "ping", "id": "still-open"})
        assert (await ws.receive_json())["id"] == "still-open"


async def test_a_missing_websocket_key_is_refused(client: Client) -> None:
    with pytest.raises(WSServerHandshakeError):
        await client.ws_connect("/api/v1/sessions/ses_nope/ws")

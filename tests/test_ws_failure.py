"""A WebSocket op that fails unexpectedly closes its socket with 1011; the daemon goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType

from aiosvc.web import ws
from tests.helpers import Client


async def _broken(stream: ws.WebSocketStream, frame: dict[str, Any], client_id: object) -> Any:
    raise RuntimeError("a bug in an op")


async def test_an_op_that_fails_closes_1011_and_others_go_on(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ws.OPS, "ping", _broken)
    async with client.ws_connect("/api/v1/ws") as other, client.ws_connect("/api/v1/ws") as sock:
        assert (await other.receive_json())["type"] == "hello"
        assert (await sock.receive_json())["type"] == "hello"
        await sock.send_json({"op": "ping", "id": 1})
        message = await asyncio.wait_for(sock.receive(), 10)
        assert (message.type, message.data, message.extra) == (
            WSMsgType.CLOSE,
            1011,
            "internal error",
        )
        # The other socket and the REST side are unaffected.
        await other.send_json({"op": "unsubscribe", "id": 2, "topics": []})
        assert await other.receive_json() == {"type": "ack", "id": 2, "data": {"topics": []}}
        assert (await client.get("/health")).status == 200

"""WebSocket and SSE through a real server on a real socket: exact frames, resume, errors."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import WSMsgType

from aiosvc.app import create_app
from aiosvc.config import Config
from aiosvc.web.keys import STREAMS
from tests.conftest import ClientFactory
from tests.helpers import TIME, Client, create_session


async def hook(client: Client, n: int, session_id: str | None = None) -> int:
    """Publish one hook event through the API; return its id."""
    body: dict[str, Any] = {"type": "test", "data": {"n": n}}
    if session_id is not None:
        body["session_id"] = session_id
    response = await client.post("/api/v1/hooks", json=body)
    assert response.status == 202, await response.text()
    data = (await response.json())["data"]
    assert data["type"] == "hook.test"
    event_id: int = data["event_id"]
    return event_id


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type is WSMsgType.TEXT, message
    data: dict[str, Any] = message.json()
    return data


async def events(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` event payloads (failing on any other frame)."""
    found = []
    for _ in range(count):
        frame = await receive(ws)
        assert frame["type"] == "event", frame
        found.append(frame["event"])
    return found


async def subscribe(
    ws: aiohttp.ClientWebSocketResponse, topics: list[str], since: int | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {"op": "subscribe", "topics": topics, "id": "sub"}
    if since is not None:
        op["since"] = since
    await ws.send_json(op)
    return await receive(ws)


async def test_hello_subscribe_and_event_frames(client: Client) -> None:
    async with client.ws_connect("/api/v1/ws") as ws:
        hello = await receive(ws)
        assert hello == {
            "type": "hello",
            "data": {"version": "0.1.0", "last_event_id": 0, "heartbeat_s": 30.0},
        }
        ack = await subscribe(ws, ["hooks"])
        assert ack == {"type": "ack", "id": "sub", "data": {"topics": ["hooks"], "since": None}}
        first = await hook(client, 1)
        second = await hook(client, 2)
        got = await events(ws, 2)
        assert got[0] == {
            "id": first,
            "type": "hook.test",
            "topic": "hooks",
            "ts": got[0]["ts"],
            "data": {"type": "test", "session_id": None, "data": {"n": 1}},
        }
        assert TIME.fullmatch(got[0]["ts"])
        assert second == first + 1 == got[1]["id"]


async def test_a_message_streams_its_events_in_order(client: Client) -> None:
    session = await create_session(client)
    async with client.ws_connect(f"/api/v1/sessions/{session['id']}/ws") as ws:
        await receive(ws)  # hello
        await ws.send_json({"op": "send_message", "content": "one two three", "id": 7})
        seen: list[dict[str, Any]] = []
        ack: dict[str, Any] | None = None
        while not seen or seen[-1]["type"] != "session.updated" or len(seen) < 8:
            frame = await receive(ws)
            if frame["type"] == "ack":
                ack = frame
            else:
                seen.append(frame["event"])
        assert ack is not None and ack["id"] == 7
        assert set(ack["data"]) == {"message", "reply_id", "command_id"}
        types = [e["type"] for e in seen]
        deltas = [e for e in seen if e["type"] == "message.delta"]
        assert (
            types
            == [
                "message.created",
                "session.updated",
                "message.started",
                "status",
                "session.updated",
                *["message.delta"] * len(deltas),
                "message.completed",
                "status",
                "session.updated",
            ][: len(types)]
        )
        ids = [e["id"] for e in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(e["topic"] == f"session:{session['id']}" for e in seen)
        assert "".join(d["data"]["delta"] for d in deltas) == "one two three"
        assert {d["data"]["message_id"] for d in deltas} == {ack["data"]["reply_id"]}
        started = next(e for e in seen if e["type"] == "message.started")
        assert started["data"]["status"] == "streaming"


async def test_bad_frames_get_errors_and_the_socket_stays_open(client: Client) -> None:
    async with client.ws_connect("/api/v1/ws") as ws:
        await receive(ws)
        await ws.send_str("{nope")
        error = await receive(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == "invalid_json"
        assert "id" not in error
        await ws.send_str("[1, 2]")
        assert (await receive(ws))["error"] == {
            "code": "validation_error",
            "message": "invalid field(s): $",
            "details": {"fields": {"$": "a frame must be a JSON object"}},
        }
        await ws.send_json({"op": "dance", "id": "d"})
        assert await receive(ws) == {
            "type": "error",
            "id": "d",
            "error": {
                "code": "unknown_op",
                "message": "unknown op 'dance'",
                "details": {
                    "ops": ["approve", "cancel", "ping", "send_message", "subscribe", "unsubscribe"]
                },
            },
        }
        await ws.send_json({"op": "send_message", "id": 1, "content": "x"})
        missing = await receive(ws)
        assert missing["id"] == 1
        assert missing["error"]["details"] == {
            "fields": {"session_id": "required field is missing"}
        }
        await ws.send_json({"op": "subscribe", "id": 2, "topics": ["nonsense"]})
        assert (await receive(ws))["error"]["code"] == "validation_error"
        await ws.send_json({"op": "subscribe", "id": 3, "topics": ["hooks"], "since": -1})
        assert (await receive(ws))["error"]["code"] == "invalid_parameter"
        await ws.send_json(
            {"op": "send_message", "id": 4, "session_id": "ses_nope", "content": "x"}
        )
        assert (await receive(ws))["error"]["code"] == "not_found"
        await ws.send_json({"op": "ping", "id": 5})
        assert await receive(ws) == {"type": "ack", "id": 5, "data": {}}


async def test_binary_frame_closes_1003(client: Client) -> None:
    async with client.ws_connect("/api/v1/ws") as ws:
        await receive(ws)
        await ws.send_bytes(b"\x00\x01")
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type is WSMsgType.CLOSE
        assert message.data == 1003


async def test_oversized_frame_closes_1009(aiohttp_client: ClientFactory, config: Config) -> None:
    small = attrs.evolve(config, limits=attrs.evolve(config.limits, max_ws_frame_bytes=1024))
    client = await aiohttp_client(create_app(small))
    async with client.ws_connect("/api/v1/ws") as ws:
        await receive(ws)
        await ws.send_str("x" * 2048)
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type is WSMsgType.CLOSE
        assert message.data == 1009


async def test_bound_socket_and_404_before_upgrade(client: Client) -> None:
    response = await client.get("/api/v1/sessions/ses_missing/ws")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    response = await client.get("/api/v1/ws")  # no upgrade headers
    assert response.status == 426
    assert (await response.json())["error"]["code"] == "upgrade_required"
    session = await create_session(client)
    other = await create_session(client)
    async with client.ws_connect(f"/api/v1/sessions/{session['id']}/ws") as ws:
        await receive(ws)
        await hook(client, 1, other["id"])  # another session's: not delivered
        mine = await hook(client, 2, session["id"])
        [event] = await events(ws, 1)
        assert (event["id"], event["topic"]) == (mine, f"session:{session['id']}")
        await ws.send_json({"op": "cancel", "id": "c"})
        assert await receive(ws) == {
            "type": "ack",
            "id": "c",
            "data": {"session_id": session["id"], "cancelled": []},
        }


async def test_approve_over_the_socket(client: Client) -> None:
    session = await create_session(client)
    async with client.ws_connect("/api/v1/ws") as ws:
        await receive(ws)
        await subscribe(ws, ["approvals"])
        await ws.send_json(
            {"op": "send_message", "session_id": session["id"], "content": "/tool ls {}", "id": 1}
        )
        frame = await receive(ws)
        while frame["type"] != "event":
            frame = await receive(ws)
        assert frame["event"]["type"] == "approval.requested"
        approval = frame["event"]["data"]
        assert (approval["tool"], approval["status"]) == ("ls", "pending")
        await ws.send_json(
            {"op": "approve", "approval_id": approval["id"], "decision": "approve", "id": 2}
        )
        frame = await receive(ws)
        while frame["type"] != "ack" or frame["id"] != 2:
            frame = await receive(ws)
        assert frame["data"]["status"] == "approved"
        await ws.send_json(
            {"op": "approve", "approval_id": approval["id"], "decision": "deny", "id": 3}
        )
        frame = await receive(ws)
        while frame["type"] != "error":
            frame = await receive(ws)
        assert frame["id"] == 3
        assert frame["error"]["code"] == "already_resolved"


async def test_resume_over_websocket_has_no_gap_and_no_duplicate(client: Client) -> None:
    async with client.ws_connect("/api/v1/ws") as ws:
        await receive(ws)
        await subscribe(ws, ["hooks"])
        await hook(client, 0)
        [last] = await events(ws, 1)
    missed = [await hook(client, n) for n in range(1, 6)]

    async def publish_more() -> list[int]:
        return [await hook(client, n) for n in range(6, 40)]

    publisher = asyncio.create_task(publish_more())  # events land during the reconnect
    async with client.ws_connect("/api/v1/ws") as ws:
        await receive(ws)
        ack = await subscribe(ws, ["hooks"], since=last["id"])
        assert ack["data"] == {"topics": ["hooks"], "since": last["id"]}
        later = await publisher
        got = await events(ws, len(missed) + len(later))
        assert [e["id"] for e in got] == missed + later
        assert [e["data"]["data"]["n"] for e in got] == list(range(1, 40))


async def test_resume_from_an_unknown_id_resets_first(client: Client) -> None:
    await hook(client, 0)
    async with client.ws_connect("/api/v1/ws") as ws:
        hello = await receive(ws)
        ack = await subscribe(ws, ["hooks"], since=10_000)  # from the future (or a lost run)
        assert ack["type"] == "ack"
        assert await receive(ws) == {
            "type": "reset",
            "last_event_id": hello["data"]["last_event_id"],
        }
        new = await hook(client, 1)
        assert [e["id"] for e in await events(ws, 1)] == [new]


async def test_several_clients_see_the_same_events_with_the_same_ids(client: Client) -> None:
    session = await create_session(client)
    sockets = [await client.ws_connect(f"/api/v1/sessions/{session['id']}/ws") for _ in range(3)]
    sse = await client.get(f"/api/v1/sessions/{session['id']}/events")
    try:
        for ws in sockets:
            await receive(ws)
        ids = [await hook(client, n, session["id"]) for n in range(5)]
        for ws in sockets:
            assert [e["id"] for e in await events(ws, 5)] == ids
        text = await read_sse(sse, 6)  # retry + 5 events
        assert [int(i) for i in re.findall(r"^id: (\d+)$", text, re.M)] == ids
    finally:
        sse.close()
        for ws in sockets:
            await ws.close()


async def read_sse(response: aiohttp.ClientResponse, blocks: int) -> str:
    """Read until ``blocks`` blank-line-terminated blocks have arrived."""
    text = ""
    async with asyncio.timeout(10):
        while text.count("\n\n") < blocks:
            text += (await response.content.readany()).decode()
    return text


async def test_sse_framing_headers_and_resume(client: Client) -> None:
    first = await hook(client, 1)
    second = await hook(client, 2)
    response = await client.get(
        "/api/v1/events?topics=hooks", headers={"Last-Event-ID": str(first)}
    )
    try:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-ID"])
        third = await hook(client, 3)
        text = await read_sse(response, 3)
        blocks = text.split("\n\n")
        assert blocks[0] == "retry: 2000"
        ts = re.findall(r'"ts":"([^"]+)"', text)
        data = '{"type":"test","session_id":null,"data":{"n":2}}'
        assert blocks[1] == (
            f"id: {second}\nevent: hook.test\n"
            f'data: {{"topic":"hooks","ts":"{ts[0]}","data":{data}}}'
        )
        assert blocks[2].startswith(f"id: {third}\nevent: hook.test\ndata: ")
    finally:
        response.close()
    query = await client.get(f"/api/v1/events?last_event_id={second}")
    try:
        text = await read_sse(query, 2)
        assert re.findall(r"^id: (\d+)$", text, re.M) == [str(third)]
    finally:
        query.close()


async def test_events_of_every_frame_length_arrive_whole_on_both_transports(
    client: Client,
) -> None:
    # Lengths around the WebSocket header's 7-, 16- and 64-bit forms, written straight to
    # the sockets (the handover to the writer task is tested in test_outbox).
    sizes = [10, 200, 70_000, 10]
    sse = await client.get("/api/v1/events?topics=hooks")
    try:
        async with client.ws_connect("/api/v1/ws") as ws:
            await receive(ws)  # hello
            await subscribe(ws, ["hooks"])
            for size in sizes:
                response = await client.post(
                    "/api/v1/hooks", json={"type": "pad", "data": {"pad": "x" * size}}
                )
                assert response.status == 202
            got = await events(ws, len(sizes))
            assert [len(e["data"]["data"]["pad"]) for e in got] == sizes
        text = await read_sse(sse, 1 + len(sizes))
        pads = re.findall(r'"pad":"(x*)"', text)
        assert [len(p) for p in pads] == sizes
    finally:
        sse.close()


async def test_sse_to_an_http_1_0_client_is_not_chunked(client: Client) -> None:
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"GET /api/v1/events?topics=hooks HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200 OK\r\n"), head
            assert b"transfer-encoding" not in head.lower()
            assert await reader.readuntil(b"\n\n") == b"retry: 2000\n\n"
            first = await hook(client, 1)
            second = await hook(client, 2)
            blocks = [await reader.readuntil(b"\n\n") for _ in range(2)]
        for block, event_id, n in zip(blocks, (first, second), (1, 2), strict=True):
            ts = re.search(rb'"ts":"([^"]+)"', block)
            assert ts is not None and TIME.fullmatch(ts[1].decode())
            data = b'{"type":"test","session_id":null,"data":{"n":%d}}' % n
            assert block == (
                b"id: %d\nevent: hook.test\n" % event_id
                + b'data: {"topic":"hooks","ts":"%s","data":%s}\n\n' % (ts[1], data)
            )
    finally:
        writer.close()
        await writer.wait_closed()


async def test_sse_bad_requests_are_400_and_404(client: Client) -> None:
    for path, headers, name in [
        ("/api/v1/events", {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        ("/api/v1/events?last_event_id=-4", {}, "last_event_id"),
        ("/api/v1/events?topics=nope", {}, "topics"),
        ("/api/v1/events?topics=", {}, "topics"),
    ]:
        response = await client.get(path, headers=headers)
        assert response.status == 400, path
        body = await response.json()
        assert body["error"]["code"] == "invalid_parameter"
        assert body["error"]["details"] == {"parameter": name}
    response = await client.get("/api/v1/sessions/ses_nope/events")
    assert response.status == 404


async def test_sse_reset_moves_the_resume_point(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    small = attrs.evolve(config, events=attrs.evolve(config.events, buffer_size=2))
    client = await aiohttp_client(create_app(small))
    for n in range(5):
        await hook(client, n)
    response = await client.get("/api/v1/events", headers={"Last-Event-ID": "1"})
    try:
        text = await read_sse(response, 2)
        reset = text.split("\n\n")[1]
        assert reset.startswith("id: 5\nevent: reset\ndata: ")
        assert '"data":{"last_event_id":5}' in reset
    finally:
        response.close()


async def test_heartbeats(aiohttp_client: ClientFactory, config: Config) -> None:
    fast = attrs.evolve(
        config, streams=attrs.evolve(config.streams, heartbeat_s=0.2, sse_ping_s=0.2)
    )
    app = create_app(fast)
    client = await aiohttp_client(app)
    response = await client.get("/api/v1/events")
    try:
        text = ""
        async with asyncio.timeout(10):
            while ": ping" not in text:
                text += (await response.content.readany()).decode()
        assert text.startswith("retry: 2000\n\n: ping")
    finally:
        response.close()
    # A peer that stops answering pings is dropped.
    async with client.ws_connect("/api/v1/ws", autoping=False) as ws:
        await receive(ws)
        async with asyncio.timeout(10):
            while True:
                message = await ws.receive()
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
    async with asyncio.timeout(10):
        while len(app[STREAMS]):
            await asyncio.sleep(0.05)
    # One that answers stays (aiohttp's client answers pings while it is receiving).
    async with client.ws_connect("/api/v1/ws") as ws:
        await receive(ws)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.receive(), 1.0)
        await ws.send_json({"op": "ping", "id": 1})
        assert (await receive(ws))["type"] == "ack"


@pytest.mark.parametrize("path", ["/api/v1/ws", "/api/v1/events"])
async def test_a_disconnected_client_is_forgotten(client: Client, path: str) -> None:
    app = client.app
    assert app is not None
    if path.endswith("ws"):
        ws = await client.ws_connect(path)
        await receive(ws)
        assert len(app[STREAMS]) == 1
        await ws.close()
    else:
        response = await client.get(path)
        await read_sse(response, 1)
        assert len(app[STREAMS]) == 1
        response.close()
    async with asyncio.timeout(10):
        while len(app[STREAMS]):
            await asyncio.sleep(0.02)
    await hook(client, 1)  # publishing to nobody is fine

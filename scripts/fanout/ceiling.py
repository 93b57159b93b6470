"""The fan-out benchmark's ceiling: a minimal aiohttp server under the same load as aiosvc.

It takes the same hook POST and sends the same WebSocket and SSE frames, written straight to
every connection from the request handler (no bus, no outbox, no priorities), so that it shows
what aiohttp alone costs. Run as ``python scripts/fanout/ceiling.py PORT``: it imports nothing
from the benchmark, so it starts the same from any working directory.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import sys
import time

import orjson
from aiohttp import WSMsgType, web

ws_clients: set[web.WebSocketResponse] = set()
sse_clients: dict[web.StreamResponse, asyncio.Future[None]] = {}  # the future ends the stream
ids = itertools.count(1)
_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def utcnow() -> str:
    """The current time as aiosvc stamps events: RFC 3339, UTC, milliseconds, ``Z``."""
    # Every event is stamped: format the date and time once per second only.
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


async def health(request: web.Request) -> web.Response:
    """Answer the benchmark's readiness poll."""
    return web.json_response({"data": {"status": "ok"}})


async def hook(request: web.Request) -> web.Response:
    """Take one hook and write its event to every subscriber before answering 202."""
    body = orjson.loads(await request.read())
    kind = body["type"]
    hook_data = {"type": kind, "session_id": body.get("session_id"), "data": body.get("data")}
    data = orjson.dumps(hook_data)
    event_id, ts, event_type = next(ids), utcnow(), b"hook." + kind.encode()
    ws_frame = (
        b'{"type":"event","event":{"id":%d,"type":"%s","topic":"hooks","ts":"%s","data":%s}}'
        % (event_id, event_type, ts.encode(), data)
    )
    sse_frame = b'id: %d\nevent: %s\ndata: {"topic":"hooks","ts":"%s","data":%s}\n\n' % (
        event_id,
        event_type,
        ts.encode(),
        data,
    )
    for ws in tuple(ws_clients):
        try:
            await ws.send_frame(ws_frame, WSMsgType.TEXT)
        except Exception:
            ws_clients.discard(ws)
    for response, done in tuple(sse_clients.items()):
        try:
            await response.write(sse_frame)
        except Exception:
            sse_clients.pop(response, None)
            if not done.done():
                done.set_result(None)
    answer = orjson.dumps({"data": {"event_id": event_id, "type": event_type.decode()}})
    return web.Response(body=answer, status=202, content_type="application/json")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """A WebSocket stream: hello, then events once the client has subscribed."""
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    hello = {"type": "hello", "data": {"version": "ceiling", "last_event_id": 0, "heartbeat_s": 30}}
    await ws.send_frame(orjson.dumps(hello), WSMsgType.TEXT)
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                op = orjson.loads(message.data)
                if op.get("op") == "subscribe":
                    data = {"topics": ["hooks"], "since": None}
                    ack = {"type": "ack", "id": op.get("id"), "data": data}
                    await ws.send_frame(orjson.dumps(ack), WSMsgType.TEXT)
                    ws_clients.add(ws)
    finally:
        ws_clients.discard(ws)
    return ws


async def events(request: web.Request) -> web.StreamResponse:
    """An SSE stream of every event, open until a write to it fails."""
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    done = asyncio.get_running_loop().create_future()
    sse_clients[response] = done
    try:
        await done
    finally:
        sse_clients.pop(response, None)
    return response


def main() -> None:
    """Serve on 127.0.0.1 at the port given as the only argument, until terminated."""
    # One connection per subscriber: as many open files as the hard limit allows.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/api/v1/hooks", hook)
    app.router.add_get("/api/v1/ws", websocket)
    app.router.add_get("/api/v1/events", events)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        print=None,
        access_log=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()

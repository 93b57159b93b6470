"""Large events through a real ``aiosvc serve``: a reply larger than a client's outbox reaches
clients that keep up cut and marked ``truncated`` (live and replayed, WebSocket and SSE), one
big frame costs them none of the deltas of its turn, and a stalled client is still let go."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving import Server
from tests.test_streams_process import stalled_websocket, vm_rss_kib

LINE = "%07d the quick brown fox jumps over the lazy dog\n"
PRINTER = f"""import sys
size = int(sys.stdin.read())
lines, total, n = [], 0, 0
while total < size:
    line = {LINE!r} % n
    lines.append(line)
    total += len(line)
    n += 1
sys.stdout.write("".join(lines)[:size])
"""


def printed(size: int) -> str:
    """What the printer agent prints when asked for ``size`` characters."""
    lines, total, n = [], 0, 0
    while total < size:
        line = LINE % n
        lines.append(line)
        total += len(line)
        n += 1
    return "".join(lines)[:size]


def config(tmp_path: Path, streams: str = "", events: str = "") -> Path:
    """Echo by default, and ``printer``: a command agent printing as many characters as the
    prompt says."""
    program = tmp_path / "printer.py"
    program.write_text(PRINTER)
    path = tmp_path / "aiosvc.toml"
    path.write_text(
        f"[limits]\nmax_reply_chars = 8388608\n\n[streams]\n{streams}\n[events]\n{events}\n"
        '[agents]\ndefault = "echo"\n\n[agents.echo]\nkind = "echo"\n\n'
        f'[agents.printer]\nkind = "command"\nargv = ["{sys.executable}", "{program}"]\n'
    )
    return path


@pytest.fixture
async def server(db_path: Path, tmp_path: Path) -> AsyncIterator[Server]:
    served = Server(db_path, config=config(tmp_path))
    await served.start()
    yield served
    assert await served.stop() == 0


class Seen:
    """What one stream client received: events by type, and the dropped counts it was told."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.told_dropped = 0

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def deltas(self, message_id: str) -> list[str]:
        deltas = self.of("message.delta")
        return [e["data"]["delta"] for e in deltas if e["data"]["message_id"] == message_id]

    def final(self, message_id: str) -> dict[str, Any] | None:
        done = [e for e in self.of("message.completed") if e["data"]["id"] == message_id]
        return done[0] if done else None


async def read_ws(ws: aiohttp.ClientWebSocketResponse, seen: Seen, until: str) -> None:
    """Read events until one whose data has id ``until`` ends a message."""
    while True:
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data)
        frame = orjson.loads(message.data)
        if frame["type"] == "dropped":
            seen.told_dropped += frame["count"]
        elif frame["type"] == "event":
            event = frame["event"]
            seen.events.append(event)
            if event["type"] == "message.completed" and event["data"]["id"] == until:
                return


class SSE:
    """An SSE client that parses blocks itself, whatever their size."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.buffer = b""

    async def block(self) -> bytes:
        while b"\n\n" not in self.buffer:
            chunk = await self.response.content.readany()
            assert chunk, "the stream ended"
            self.buffer += chunk
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block

    async def read(self, seen: Seen, until: str) -> None:
        """Read events until one whose data has id ``until`` ends a message."""
        while True:
            block = await self.block()
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            if b"event" not in fields:
                continue  # retry:, a ping
            body = orjson.loads(fields[b"data"])
            kind = fields[b"event"].decode()
            if kind == "dropped":
                seen.told_dropped += body["data"]["count"]
                continue
            event = {"id": int(fields[b"id"]), "type": kind, **body}
            seen.events.append(event)
            if kind == "message.completed" and body["data"]["id"] == until:
                return


async def published(server: Server, kind: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "aiosvc_events_published_total" and sample.labels == {"type": kind}:
                return sample.value
    return 0.0


async def open_streams(
    http: aiohttp.ClientSession, server: Server, sid: str, since: int | None = None
) -> tuple[aiohttp.ClientWebSocketResponse, SSE, int]:
    """A WebSocket and an SSE client on the session (resuming after ``since``); the newest
    event id when they opened."""
    ws = await http.ws_connect(f"{server.url}/api/v1/sessions/{sid}/ws")
    hello = await ws.receive_json()
    if since is not None:
        await ws.send_json({"op": "subscribe", "topics": [f"session:{sid}"], "since": since})
        assert (await ws.receive_json())["type"] == "ack"
    headers = {"Last-Event-ID": str(since)} if since is not None else {}
    response = await http.get(f"{server.url}/api/v1/sessions/{sid}/events", headers=headers)
    assert response.status == 200
    sse = SSE(response)
    assert await sse.block() == b"retry: 2000"
    return ws, sse, int(hello["data"]["last_event_id"])


async def session(http: aiohttp.ClientSession, server: Server, agent: str) -> str:
    async with http.post(server.url + "/api/v1/sessions", json={"agent": agent}) as response:
        assert response.status == 201
        sid: str = (await response.json())["data"]["id"]
        return sid


async def send(http: aiohttp.ClientSession, server: Server, sid: str, text: str) -> str:
    """Send ``text``; return the reply's id once it is accepted."""
    url = f"{server.url}/api/v1/sessions/{sid}/messages"
    async with http.post(url, json={"content": text}) as response:
        assert response.status == 202
        reply_id: str = (await response.json())["data"]["reply_id"]
        return reply_id


async def history(http: aiohttp.ClientSession, server: Server, sid: str) -> list[dict[str, Any]]:
    async with http.get(f"{server.url}/api/v1/sessions/{sid}/messages") as response:
        assert response.status == 200
        messages: list[dict[str, Any]] = (await response.json())["data"]
        return messages


SIZE = 3 * 1024 * 1024  # three times the outbox limit (1 MiB)


async def test_clients_that_keep_up_stay_connected_through_a_reply_over_the_outbox_limit(
    server: Server,
) -> None:
    text = printed(SIZE)
    async with aiohttp.ClientSession() as http:
        sid = await session(http, server, "printer")
        ws, sse, before = await open_streams(http, server, sid)
        reply_id = await send(http, server, sid, str(SIZE))
        by_ws, by_sse = Seen(), Seen()
        async with asyncio.timeout(60):
            await asyncio.gather(read_ws(ws, by_ws, reply_id), sse.read(by_sse, reply_id))
        (stored,) = [m for m in await history(http, server, sid) if m["id"] == reply_id]
        assert stored["content"] == text  # the whole text, over REST
        total_deltas = await published(server, "message.delta")
        for seen in (by_ws, by_sse):
            final = seen.final(reply_id)
            assert final is not None
            data = final["data"]
            assert data == {**stored, "content": data["content"], "truncated": True}
            assert text.startswith(data["content"])
            assert 60_000 < len(data["content"]) <= 65_536  # a sixteenth of the limit
            # every delta reached the client, or it was told it missed it
            deltas = seen.deltas(reply_id)
            assert len(deltas) + seen.told_dropped == total_deltas > 40
            assert all(delta in text for delta in deltas)
            if not seen.told_dropped:
                assert "".join(deltas) == text
        # both are still connected: the next event reaches them
        hook = {"type": "after", "session_id": sid, "data": {}}
        async with http.post(server.url + "/api/v1/hooks", json=hook) as response:
            assert response.status == 202
        async with asyncio.timeout(20):
            while (await ws.receive_json())["event"]["type"] != "hook.after":
                pass  # (the reply's last status and session.updated come first)
            while b"event: hook.after" not in await sse.block():
                pass
        # a client resuming from before the reply gets the same cut completion
        again_ws, again_sse, _ = await open_streams(http, server, sid, since=before)
        replay_ws, replay_sse = Seen(), Seen()
        async with asyncio.timeout(60):
            await read_ws(again_ws, replay_ws, reply_id)
            await again_sse.read(replay_sse, reply_id)
        assert replay_ws.final(reply_id) == by_ws.final(reply_id)
        assert replay_sse.final(reply_id) == by_sse.final(reply_id)
        for stream in (ws, again_ws):
            await stream.close()
        for reader in (sse, again_sse):
            reader.response.close()
    assert '"stream_client_too_slow"' not in server.log()


async def test_a_client_that_keeps_up_gets_every_delta_of_a_turn_with_a_100_kb_frame(
    server: Server,
) -> None:
    # The echo agent sends its reply in 8 deltas, in one turn of the event loop: the first of
    # 100 KB (over the 64 KiB high mark on its own), then seven small ones.
    words = ["x" * 100_000 + " ", *[f"w{n} " for n in range(15)]]
    async with aiohttp.ClientSession() as http:
        sid = await session(http, server, "echo")
        ws, sse, _ = await open_streams(http, server, sid)
        for round_ in range(3):
            text = "".join(words) + str(round_)
            reply_id = await send(http, server, sid, text)
            by_ws, by_sse = Seen(), Seen()
            async with asyncio.timeout(30):
                await asyncio.gather(read_ws(ws, by_ws, reply_id), sse.read(by_sse, reply_id))
            for seen in (by_ws, by_sse):
                assert seen.told_dropped == 0
                deltas = seen.deltas(reply_id)
                assert len(deltas) == 8
                assert "".join(deltas) == text
                assert seen.of("message.created")[-1]["data"]["content"] == text  # whole
                final = seen.final(reply_id)
                assert final is not None
                assert final["data"]["content"] == text
                assert "truncated" not in final["data"]
        await ws.close()
        sse.response.close()


def close_code(sock: socket.socket) -> int:
    """Read a WebSocket server's frames until its close frame; return the close code."""
    data = b""
    while True:
        while len(data) < 2 or len(data) < header_size(data):
            chunk = sock.recv(1 << 20)
            assert chunk, "the connection ended without a close frame"
            data += chunk
        opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            (length,), start = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            (length,), start = struct.unpack("!Q", data[2:10]), 10
        while len(data) < start + length:
            chunk = sock.recv(1 << 20)
            assert chunk, "the connection ended without a close frame"
            data += chunk
        if opcode == 0x8:
            code: int = struct.unpack("!H", data[start : start + 2])[0]
            return code
        data = data[start + length :]


def header_size(data: bytes) -> int:
    return {126: 4, 127: 10}.get(data[1] & 0x7F, 2)


async def test_a_stalled_client_is_let_go_with_1013_and_bounded_memory(
    db_path: Path, tmp_path: Path
) -> None:
    limits = "outbox_low_bytes = 16384\noutbox_high_bytes = 65536\noutbox_limit_bytes = 262144\n"
    server = Server(db_path, config=config(tmp_path, streams=limits, events="buffer_size = 50\n"))
    await server.start()
    assert server.process is not None
    size = 1024 * 1024  # four times the outbox limit
    text = printed(size)
    try:
        async with aiohttp.ClientSession() as http:
            sid = await session(http, server, "printer")
            fast = await http.ws_connect(f"{server.url}/api/v1/sessions/{sid}/ws")
            await fast.receive_json()
            stalled = await asyncio.to_thread(stalled_websocket, server.port, [f"session:{sid}"])
            await asyncio.sleep(0.2)
            before = vm_rss_kib(server.process.pid)
            rounds = 0
            hook = {"type": "pad", "session_id": sid, "data": {"pad": "p" * 60_000}}
            while '"stream_client_too_slow"' not in server.log():
                assert rounds < 20, "the stalled client was never let go"
                # a reply over the limit, and high-priority events that fill the outbox
                reply_id = await send(http, server, sid, str(size))
                seen = Seen()
                async with asyncio.timeout(30):
                    await read_ws(fast, seen, reply_id)  # the fast one gets every reply
                final = seen.final(reply_id)
                assert final is not None
                assert final["data"]["truncated"] is True
                assert text.startswith(final["data"]["content"])
                for _ in range(8):
                    async with http.post(server.url + "/api/v1/hooks", json=hook) as response:
                        assert response.status == 202
                async with asyncio.timeout(30):
                    got = 0
                    while got < 8:
                        frame = await fast.receive_json()
                        got += frame["type"] == "event" and frame["event"]["type"] == "hook.pad"
                rounds += 1
            # Each round's reply stays in the history's cache (several MiB a round, measured);
            # a client holding whole replies or unbounded deltas would add far more.
            grown_mib = (vm_rss_kib(server.process.pid) - before) / 1024
            assert grown_mib < 12 + 6 * rounds, f"grew {grown_mib:.1f} MiB in {rounds} rounds"
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            stalled.settimeout(20)
            try:
                assert await asyncio.to_thread(close_code, stalled) == 1013
            finally:
                with contextlib.suppress(OSError):
                    stalled.close()
            await fast.close()
        (slow,) = [e for e in server.events() if e["event"] == "stream_client_too_slow"]
        assert slow["transport"] == "ws"
        assert slow["pending_bytes"] <= 262_144  # what it held when let go: within the limit
    finally:
        assert await server.stop() == 0

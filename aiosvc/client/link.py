"""The session's WebSocket, kept up: connect, resume after a drop, send the outbox.

After a drop the client reconnects with backoff and resumes with ``subscribe`` from the last
event id it saw, so the server replays what it missed; when the server cannot (a restart, an
id too old) it answers ``reset`` and the client refetches the history over REST instead.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from aiosvc.client.api import Api, ApiError, Unreachable, describe
from aiosvc.client.display import Display
from aiosvc.client.pending import PendingOps
from aiosvc.client.transcript import Transcript

FIRST_DELAY = 0.5
MAX_DELAY = 5.0
#: Ping interval: notices a dead peer the kernel has not told about (a network gone away).
HEARTBEAT = 20.0
HELLO_TIMEOUT = 15.0
HISTORY = 20  # messages shown when attaching


class Fatal(Exception):
    """The chat cannot go on (the session is gone, the key is refused)."""


class Link:
    """One session's WebSocket and what is sent and received on it, across reconnects."""

    def __init__(
        self,
        api: Api,
        session_id: str,
        transcript: Transcript,
        outbox: PendingOps,
        display: Display,
    ) -> None:
        self.api = api
        self.session_id = session_id
        self.transcript = transcript
        self.outbox = outbox
        self.display = display
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.last_event_id: int | None = None  # None until the first hello
        self._delay = FIRST_DELAY
        self._down = False  # a drop was announced and no connection has been made since
        self._sending = asyncio.Lock()
        self._resumes = 0
        #: Set once the history is shown: the pending approvals are known from then on.
        self.ready = asyncio.Event()
        self.closing = False  # the user is leaving: a socket closed now is no news

    async def run(self) -> None:
        """Stay connected until cancelled; raise :class:`Fatal` when that is pointless."""
        while True:
            reason = await self._connect_once()
            if not self._down:
                self._down = True
                if self.last_event_id is None:
                    self.display.notice(f"cannot connect: {reason}; retrying")
                else:
                    self.display.notice(f"disconnected: {reason}; reconnecting")
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, MAX_DELAY)

    async def flush(self) -> None:
        """Send the queued ops, in order, while connected."""
        async with self._sending:
            while (ws := self.ws) is not None and not ws.closed:
                op = self.outbox.next()
                if op is None:
                    return
                try:
                    await ws.send_str(op.encode())
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    return  # not written: it stays queued for the next connection
                self.outbox.sent(op)

    async def _connect_once(self) -> str:
        """Connect and serve the socket until it ends; return why it ended."""
        try:
            ws = await self.api.http.ws_connect(
                self.url(),
                heartbeat=HEARTBEAT,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:
                raise Fatal(f"session '{self.session_id}' no longer exists") from None
            if exc.status in (401, 403):
                message = f"the server refused the connection: {exc.status} {exc.message}"
                raise Fatal(message) from None
            return f"HTTP {exc.status} {exc.message}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return describe(exc)
        try:
            return await self._serve(ws)
        except Unreachable as exc:
            return str(exc)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            return describe(exc)  # the socket broke while the client wrote to it
        except ApiError as exc:
            if exc.status == 404:
                raise Fatal(f"session '{self.session_id}' no longer exists") from None
            return f"{exc.code}: {exc.message}"
        finally:
            self.ws = None
            lost = self.outbox.disconnected()
            if lost and not self.closing:
                self.transcript.lost(lost)
            await ws.close()

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        try:
            hello = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT)
        except TimeoutError:
            return "no greeting from the server"
        if hello.type is not aiohttp.WSMsgType.TEXT or _decode(hello.data).get("type") != "hello":
            return "no greeting from the server"
        await self.greet(ws, _decode(hello.data)["data"])
        if self._down:
            self._down = False
            self.display.notice("reconnected")
        self._delay = FIRST_DELAY
        self.ws = ws
        await self.flush()
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                await self._on_frame(_decode(message.data))
            elif message.type is aiohttp.WSMsgType.ERROR:
                return describe(ws.exception() or ConnectionError("connection error"))
        if ws.close_code is None or ws.close_code == 1006:
            return "the connection was lost"
        return f"closed by the server ({ws.close_code})"

    def url(self) -> str:
        """The WebSocket URL to connect to."""
        return self.api.ws_url(self.session_id)

    async def greet(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]) -> None:
        """Start a connection: the first shows the history, later ones resume from the last
        event id seen."""
        if self.last_event_id is None:
            self.last_event_id = int(hello["last_event_id"])
            await self._show_history()
        else:
            self._resumes += 1
            await ws.send_json(
                {
                    "op": "subscribe",
                    "topics": [f"session:{self.session_id}"],
                    "since": self.last_event_id,
                    "id": f"resume{self._resumes}",
                }
            )

    async def _show_history(self) -> None:
        messages = await self.api.recent_messages(self.session_id, HISTORY)
        approvals = await self.api.pending_approvals(self.session_id)
        self.transcript.show_history(messages, approvals)
        self.ready.set()

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "event":
            event = frame.get("event")
            if isinstance(event, dict):
                if isinstance(event.get("id"), int) and self.last_event_id is not None:
                    self.last_event_id = max(self.last_event_id, event["id"])
                await self._make_whole(event)
                self.transcript.on_event(event)
        elif kind == "ack":
            op = self.outbox.answered(frame.get("id"))
            if op is not None:
                self.transcript.acked(op, frame.get("data"))
        elif kind == "error":
            op = self.outbox.answered(frame.get("id"))
            self.transcript.failed(op, frame.get("error"))
        elif kind == "reset":
            # The missed events are gone: refetch the state, continue from the server's now.
            last = frame.get("last_event_id")
            if isinstance(last, int):
                self.last_event_id = last
            await self._show_history()
        if self.transcript.deleted:
            raise Fatal(f"session '{self.session_id}' was deleted")

    async def _make_whole(self, event: dict[str, Any]) -> None:
        """A message too large for the stream comes cut (``truncated``): put in the whole
        message from the history; if that cannot be read, the beginning is shown."""
        data = event.get("data")
        if not isinstance(data, dict) or data.get("truncated") is not True or "content" not in data:
            return
        try:
            messages = await self.api.recent_messages(self.session_id, HISTORY)
        except (ApiError, Unreachable):
            return
        for message in messages:
            if message.get("id") == data.get("id"):
                event["data"] = message
                return


def _decode(text: str) -> dict[str, Any]:
    try:
        frame = json.loads(text)
    except ValueError:
        return {}
    return frame if isinstance(frame, dict) else {}

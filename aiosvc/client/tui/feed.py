"""The full-screen client's one WebSocket (``/api/v1/ws``): the session list, every pending
approval and the open session, kept up across drops, restarts and ``reset``.

It is the line client's :class:`~aiosvc.client.link.Link` (backoff, outbox, answers to ops)
subscribed to more topics: each connection subscribes to them all from the last event id
seen, then the state is read again over REST; the transcript shows each message once.
"""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp

from aiosvc.client.api import Api
from aiosvc.client.display import Display
from aiosvc.client.link import Link
from aiosvc.client.pending import PendingOps
from aiosvc.client.transcript import Transcript

CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
RESYNCHRONISING = "resynchronising"


class Listener(Protocol):
    """What the feed tells the application."""

    def connection(self, state: str, detail: str = "") -> None:
        """The connection's state changed."""

    async def resync(self) -> None:
        """Read the state again over REST (sessions, approvals, the open session)."""

    def feed_event(self, event: dict[str, Any]) -> None:
        """Any event (the session list and the approvals follow all of them)."""


def about_session(event: dict[str, Any]) -> str | None:
    """The session an event is about, if any."""
    topic = event.get("topic")
    if isinstance(topic, str) and topic.startswith("session:"):
        return topic.removeprefix("session:")
    data = event.get("data")
    if not isinstance(data, dict):
        return None
    kind = str(event.get("type"))
    value = data.get("id") if kind.startswith("session.") else data.get("session_id")
    return value if isinstance(value, str) else None


class Feed(Link):
    """One multiplexed WebSocket: ``sessions``, ``approvals`` and ``session:<open one>``."""

    def __init__(
        self,
        api: Api,
        transcript: Transcript,
        outbox: PendingOps,
        display: Display,
        listener: Listener,
    ) -> None:
        super().__init__(api, "", transcript, outbox, display)
        self.listener = listener
        self._subscriptions = 0

    def topics(self) -> list[str]:
        """The topics every connection subscribes to."""
        topics = ["sessions", "approvals"]
        return [*topics, f"session:{self.session_id}"] if self.session_id else topics

    def url(self) -> str:
        """``/api/v1/ws``, with the key in the query when there is one."""
        return self.api.stream_url("/api/v1/ws")

    async def _connect_once(self) -> str:
        self.listener.connection(CONNECTING if self.last_event_id is None else RECONNECTING)
        reason = await super()._connect_once()
        self.listener.connection(RECONNECTING, reason)
        return reason

    async def greet(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]) -> None:
        """Subscribe from the last event seen (the server replays what was missed), then
        read the state again: what the replay and the state overlap on is shown once."""
        if self.last_event_id is None:
            self.last_event_id = int(hello["last_event_id"])
        await self._subscribe(ws, self.topics())
        await self.listener.resync()
        self.listener.connection(CONNECTED)

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse, topics: list[str]) -> None:
        self._subscriptions += 1
        frame = {
            "op": "subscribe",
            "topics": topics,
            "since": self.last_event_id,
            "id": f"subscribe{self._subscriptions}",
        }
        await ws.send_json(frame)

    async def switch(self, session_id: str, transcript: Transcript, display: Display) -> None:
        """Follow another session (its events from now on; its history is read by the app)."""
        old = self.session_id
        self.session_id = session_id
        self.transcript = transcript
        self.display = display
        ws = self.ws
        if ws is None or ws.closed:
            return  # the next connection subscribes to the new topics
        async with self._sending:
            try:
                if old:
                    await ws.send_json({"op": "unsubscribe", "topics": [f"session:{old}"]})
                if session_id:
                    await self._subscribe(ws, [f"session:{session_id}"])
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                pass  # the connection is going: the next one subscribes to the new topics

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "event":
            event = frame.get("event")
            if not isinstance(event, dict):
                return
            if isinstance(event.get("id"), int) and self.last_event_id is not None:
                self.last_event_id = max(self.last_event_id, event["id"])
            if self.session_id and about_session(event) == self.session_id:
                await self._make_whole(event)
                self.transcript.on_event(event)
            self.listener.feed_event(event)
        elif kind == "ack":
            op = self.outbox.answered(frame.get("id"))
            if op is not None:
                self.transcript.acked(op, frame.get("data"))
        elif kind == "error":
            self.transcript.failed(self.outbox.answered(frame.get("id")), frame.get("error"))
        elif kind == "reset":
            # The missed events are gone: read the state again, go on from the server's now.
            self.listener.connection(RESYNCHRONISING)
            last = frame.get("last_event_id")
            if isinstance(last, int):
                self.last_event_id = last
            await self.listener.resync()
            self.listener.connection(CONNECTED)

"""One peer's event stream, held while local clients are interested, its events published
again here under local ids.

While some local client subscribes to ``sessions``, ``approvals`` or one of the peer's
``session:<id>``, the relay holds one SSE stream from the peer with those topics (a change of
topics reconnects with the last id, so nothing is lost between). The peer sends only its own
events (the request carries ``X-Aiosvc-Peer``), so an event is relayed only by the daemon that
received it from its origin. A dropped stream is resumed from the last id after a doubling
delay; a peer that cannot resume (its ring buffer no longer holds the id) answers ``reset``,
and its session list is fetched again. Session events also keep the peer's kept list current.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson
import structlog

from aiosvc.bus import Bus
from aiosvc.models import ErrorInfo
from aiosvc.peers.link import PeerLink
from aiosvc.peers.sessions import remote_session

log = structlog.get_logger(__name__)

#: The first wait before reconnecting a dropped stream, doubled up to :data:`BACKOFF_MAX_S`.
BACKOFF_S = 0.25
BACKOFF_MAX_S = 10.0
#: How long a stream that nobody wants any more is kept, in case a client comes back.
GRACE_S = 5.0
#: The longest line of a peer's stream read (an event's data is one line; the peer cuts
#: its events' frames to about half of its outbox limit).
MAX_LINE = 8 << 20
#: The session events that change a peer's list.
SESSION_CHANGES = frozenset({"session.created", "session.updated", "session.ended"})


class Relay:
    """The event stream from one peer, for the topics local clients want of it."""

    def __init__(self, link: PeerLink, bus: Bus) -> None:
        self.link = link
        self._bus = bus
        self.topics: frozenset[str] = frozenset()
        #: The peer's id of the last event received (the stream resumes after it).
        self.last_id: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.TimerHandle | None = None
        self.connected = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether a stream is held (or being reconnected)."""
        return self._task is not None and not self._task.done()

    def want(self, topics: Iterable[str]) -> None:
        """Follow exactly ``topics`` from now on (none: close after :data:`GRACE_S`)."""
        wanted = frozenset(topics)
        if not wanted:
            if self.running and self._closing is None:
                loop = asyncio.get_running_loop()
                self._closing = loop.call_later(GRACE_S, self._close_now)
            return
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        if wanted == self.topics and self.running:
            return
        self.topics = wanted
        self._restart()

    def _restart(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.connected.clear()
        self._task = asyncio.create_task(self._run(self.topics))

    def _close_now(self) -> None:
        self._closing = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.topics = frozenset()
        log.info("peer_relay_closed", peer=self.link.name)

    async def close(self) -> None:
        """Stop the stream at once."""
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, topics: frozenset[str]) -> None:
        delay = BACKOFF_S
        while True:
            try:
                await self._stream(topics)
                delay = BACKOFF_S  # it ran and ended: the peer stopped (or said shutdown)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.link.went_offline(
                    ErrorInfo(code="peer_unreachable", message=str(exc) or "no answer")
                )
            except Exception:
                log.exception("peer_relay_failed", peer=self.link.name)
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _stream(self, topics: frozenset[str]) -> None:
        headers = self.link.headers()
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5)
        async with self.link.http().get(
            self.link.url + "/api/v1/events",
            params={"topics": ",".join(sorted(topics))},
            headers=headers,
            timeout=timeout,
        ) as response:
            if response.status != 200:
                self.link.went_offline(
                    ErrorInfo(code="peer_error", message=f"its event stream: {response.status}")
                )
                return
            self.link.seen()
            self.connected.set()
            block: dict[str, str] = {}
            while raw := await response.content.readline(max_line_length=MAX_LINE):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    name, _, value = line.partition(":")
                    block[name] = value[1:] if value.startswith(" ") else value
                    continue
                if "event" in block:
                    self._received(block)
                block = {}

    def _received(self, block: dict[str, str]) -> None:
        """One SSE block from the peer: an event to publish here, or a notice."""
        kind = block["event"]
        if kind == "reset":  # the peer cannot resume from our id: take its list afresh
            self.last_id = block.get("id")
            self.link.written("", deleted=False)
            return
        if kind in ("dropped", "shutdown") or "id" not in block:
            return
        try:
            body: Any = orjson.loads(block.get("data", ""))
            topic, ts, data = body["topic"], body["ts"], body["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("peer_relay_bad_event", peer=self.link.name, event_type=kind[:64])
            return
        if not (isinstance(topic, str) and isinstance(ts, str)):
            return
        self.last_id = block["id"]
        topics = [topic]
        if kind.startswith("session.") and isinstance(data, dict):
            data = self._session_changed(kind, data)
            session_id = data.get("id")
            if isinstance(session_id, str):
                topics = ["sessions", f"session:{session_id}"]
        elif kind.startswith("approval.") and isinstance(data, dict):
            # the topics the peer gave it, whichever of them it came on here
            session_id = data.get("session_id")
            topics = ["approvals"]
            if isinstance(session_id, str):
                topics.append(f"session:{session_id}")
        self._bus.publish_relayed(kind, topics, ts, orjson.dumps(data))

    def _session_changed(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Keep the peer's list current; the session as shown here (its computer's name)."""
        if kind == "session.deleted":
            session_id = data.get("id")
            if isinstance(session_id, str):
                self.link.sessions.remove(session_id)
            return data
        session = remote_session(data, self.link.name)
        if session is not None and kind in SESSION_CHANGES:
            self.link.sessions.put(session)
        return {**data, "computer": self.link.name}

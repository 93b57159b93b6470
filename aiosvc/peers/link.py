"""One peer's link: what this daemon last learnt of another aiosvc over its HTTP API.

The link is polled lazily: a read of the computers asks the peer again only when its last
answer is older than :data:`REFRESH_S` (:data:`RETRY_OFFLINE_S` while it is offline, so a peer
that comes back is seen soon; that read does not wait for it), and reads that come together
share one request. Each change of
state (online, offline, or offline for another reason) is logged once and, when the status
changes, published as ``computer.online`` / ``computer.offline`` on topic ``computers``: a peer
that stays down costs one log line, not one per read.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import structlog

from aiosvc.bus import Bus
from aiosvc.clock import utcnow
from aiosvc.config import PeerConfig
from aiosvc.events import EventType
from aiosvc.models import ErrorInfo
from aiosvc.peers.computers import COMPUTERS_TOPIC, Computer
from aiosvc.peers.sessions import PeerSessions, RemoteSession, remote_session

log = structlog.get_logger(__name__)

#: An online peer is asked again at most this often (on read).
REFRESH_S = 30.0
#: An offline peer is asked again at most this often (on read).
RETRY_OFFLINE_S = 2.0
#: How long one poll of a peer may take before it counts as unreachable.
POLL_TIMEOUT_S = 5.0
#: The header that marks a request as a peer's: it is answered from the receiving machine alone
#: (no peers' sessions merged, no peers polled, nothing forwarded), so two daemons peered both
#: ways never ask each other in a circle. Its value is the asking computer's name.
PEER_HEADER = "X-Aiosvc-Peer"
#: Where a peer's key goes.
KEY_HEADER = "X-API-Key"
#: Sessions asked for per page of a peer's list (fewer if the peer allows fewer).
FETCH_PAGE = 500


class PeerLink:
    """Another aiosvc daemon (``[peers.NAME]``) as this one last saw it."""

    def __init__(
        self,
        name: str,
        config: PeerConfig,
        *,
        http: Callable[[], aiohttp.ClientSession],
        bus: Bus,
        here: str,
        max_bytes: int,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.name = name
        self.config = config
        self.url = config.url.rstrip("/")
        self.http = http
        self._bus = bus
        self._here = here
        #: The key as read from the environment when the link was made (None: no key sent).
        self.key = environ.get(config.api_key_env) if config.api_key_env else None
        self.status: str = "offline"
        self.error: ErrorInfo | None = None
        self.last_seen_at: str | None = None
        self.version: str | None = None
        self.session_count = 0
        #: The peer's own name for itself (from its answer).
        self.remote_name: str | None = None
        self._polled_at: float | None = None
        self._poll: asyncio.Task[None] | None = None
        self._told: tuple[str, str | None] | None = None  # the state last logged
        #: The peer's sessions as last fetched (kept, stale, while it is offline).
        self.sessions = PeerSessions(name, max_bytes)
        self._fetched_at: float | None = None  # when its list was last asked for
        self._fetched_once = False
        self._fetch: asyncio.Task[None] | None = None
        self._page: int | None = FETCH_PAGE

    @property
    def online(self) -> bool:
        """Whether the peer answered its last request."""
        return self.status == "online"

    def headers(self) -> dict[str, str]:
        """The headers of every request to the peer: its key and this daemon's name."""
        headers = {PEER_HEADER: self._here}
        if self.key is not None:
            headers[KEY_HEADER] = self.key
        return headers

    def due(self, since: float | None = None) -> bool:
        """Whether a read should ask the peer again (its state, or what was last asked for
        at ``since``)."""
        since = self._polled_at if since is None else since
        if since is None:
            return True
        wait = REFRESH_S if self.online else RETRY_OFFLINE_S
        return time.monotonic() - since >= wait

    async def current_sessions(self) -> PeerSessions:
        """The peer's sessions: fetched first if never fetched (and the peer is not known to
        be offline), else fetched again behind this read when the list is too old (the read
        answers from what is kept)."""
        if self._fetch is None and (self._fetched_at is None or self.due(self._fetched_at)):
            self._fetch = asyncio.create_task(self._fetch_sessions())
            self._fetch.add_done_callback(self._fetched)
        if self._fetch is not None and not self._fetched_once and self.error is None:
            await asyncio.shield(self._fetch)
        return self.sessions

    def written(self, session_id: str, *, deleted: bool) -> None:
        """A write to one of the peer's sessions was answered: its list is fetched again
        behind the next read (a deleted session leaves the list at once)."""
        if deleted:
            self.sessions.remove(session_id)
        self._fetched_at = None

    def _fetched(self, task: asyncio.Task[None]) -> None:
        self._fetch = None
        if not task.cancelled() and task.exception() is not None:
            log.error("peer_fetch_failed", peer=self.name, exc_info=task.exception())

    async def _fetch_sessions(self) -> None:
        try:
            fetched = await self._session_pages()
        except PeerFailed as failed:
            self.went_offline(failed.info)
        else:
            self.sessions.replace(fetched)
            self.session_count = len(self.sessions)
            self.seen()
        finally:
            self._fetched_at = time.monotonic()
            self._fetched_once = True

    async def _session_pages(self) -> list[RemoteSession]:
        """Every session of the peer's own (newest first), a page at a time, until the
        budget is spent."""
        if self.config.api_key_env is not None and self.key is None:
            env = self.config.api_key_env
            raise PeerFailed("peer_key_missing", f"the environment variable {env} is not set")
        found: list[RemoteSession] = []
        spent = 0
        after: str | None = None
        while True:
            query = {"limit": str(self._page)} if self._page is not None else {}
            if after is not None:
                query["after"] = after
            try:
                answer = await self.get_json("/api/v1/sessions", query)
            except PeerFailed as failed:
                if failed.status == 400 and self._page is not None:
                    self._page = None  # the peer allows smaller pages: its default then
                    continue
                raise
            if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
                raise PeerFailed("peer_error", "the peer's answer is not a list of sessions")
            for item in answer["data"]:
                session = remote_session(item, self.name)
                if session is not None:
                    found.append(session)
                    spent += session.cost
            after = answer.get("next")
            if not isinstance(after, str) or spent > self.sessions.max_bytes:
                return found

    async def current(self) -> Computer:
        """The peer as a computer, asking it first if its last answer is too old. An offline
        peer is asked behind the read, which answers at once: one that does not answer at all
        (a sleeping laptop) would otherwise hold every read for the poll's timeout."""
        self._poll_when_due()
        if self._poll is not None and (self.online or self._polled_at is None):
            # shielded: one reader that gives up does not cancel the others' answer
            await asyncio.shield(self._poll)
        return self.describe()

    def known_offline(self) -> bool:
        """Whether the peer failed its last request (it is asked again behind this call when
        that is due): a read need not wait for it."""
        self._poll_when_due()
        return not self.online and self.error is not None

    def _poll_when_due(self) -> None:
        if self._poll is None and self.due():
            self._poll = asyncio.create_task(self._refresh())
            self._poll.add_done_callback(self._polled)

    def _polled(self, task: asyncio.Task[None]) -> None:
        self._poll = None
        if not task.cancelled() and task.exception() is not None:
            log.error("peer_poll_failed", peer=self.name, exc_info=task.exception())

    def describe(self) -> Computer:
        """The peer as last seen, without asking it."""
        return Computer(
            name=self.name,
            url=self.url,
            local=False,
            status="online" if self.online else "offline",
            last_seen_at=self.last_seen_at,
            version=self.version,
            session_count=self.session_count,
            error=self.error,
        )

    async def _refresh(self) -> None:
        try:
            if self.config.api_key_env is not None and self.key is None:
                env = self.config.api_key_env
                raise PeerFailed("peer_key_missing", f"the environment variable {env} is not set")
            answer = await self.get_json("/api/v1/computers")
            here = _local_computer(answer)
        except PeerFailed as failed:
            self.went_offline(failed.info)
        else:
            self.version = here.get("version") if isinstance(here.get("version"), str) else None
            count = here.get("session_count")
            self.session_count = count if isinstance(count, int) else 0
            name = here.get("name")
            self.remote_name = name if isinstance(name, str) else None
            self.seen()
        finally:
            self._polled_at = time.monotonic()

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` of the peer's API: its JSON body, or :class:`PeerFailed` saying why."""
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S)
        try:
            async with self.http().get(
                self.url + path, params=params, headers=self.headers(), timeout=timeout
            ) as response:
                if response.status in (401, 403):
                    raise PeerFailed(
                        "peer_unauthorized",
                        f"the peer refused this daemon's key ({response.status})",
                    )
                if response.status != 200:
                    raise PeerFailed(
                        "peer_error", f"the peer answered {response.status}", response.status
                    )
                return await response.json()
        except PeerFailed:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerFailed("peer_unreachable", _reason(exc)) from exc
        except ValueError as exc:  # not JSON
            raise PeerFailed("peer_error", "the peer's answer is not JSON") from exc

    def seen(self) -> None:
        """The peer answered: online from now."""
        self.last_seen_at = utcnow()
        self.error = None
        self._change("online")

    def went_offline(self, why: ErrorInfo) -> None:
        """The peer could not be reached (or refused): offline, saying why."""
        self.error = why
        self._change("offline")

    def _change(self, status: str) -> None:
        was = self.status if self._told is not None else None
        self.status = status
        code = self.error.code if self.error is not None else None
        if self._told == (status, code):
            return  # no news: no line, no event
        self._told = (status, code)
        if status == "online":
            log.info("peer_online", peer=self.name, url=self.url, version=self.version)
        else:
            message = self.error.message if self.error is not None else None
            log.warning("peer_offline", peer=self.name, url=self.url, reason=code, error=message)
        if was != status:
            kind = EventType.COMPUTER_ONLINE if status == "online" else EventType.COMPUTER_OFFLINE
            self._bus.publish(kind, (COMPUTERS_TOPIC,), self.describe())


class PeerFailed(Exception):
    """A request to a peer failed: why, as the computers list reports it."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.info = ErrorInfo(code=code, message=message)
        self.status = status  # the peer's HTTP status, if it answered


def _local_computer(answer: Any) -> dict[str, Any]:
    """The peer's own entry in its ``/computers`` answer (the one marked ``local``)."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and item.get("local") is True:
                return item
    raise PeerFailed("peer_error", "the peer's answer does not describe it")


def _reason(exc: BaseException) -> str:
    """A short reason for a failed request (never the key: aiohttp's errors do not hold it)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {POLL_TIMEOUT_S:g} s"
    return str(exc) or exc.__class__.__name__

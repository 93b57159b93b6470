"""The peers' links (``[peers.NAME]``), made and remade from the configuration, and the one
HTTP client session they all share."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import aiohttp
import structlog

from aiosvc.bus import ALL, Bus
from aiosvc.config import Config, PeerConfig
from aiosvc.peers.computers import Computers
from aiosvc.peers.link import PeerLink
from aiosvc.peers.relay import Relay
from aiosvc.peers.sessions import PeerSessions, RemoteSession

log = structlog.get_logger(__name__)

#: The topics of a local client's that a peer's relay follows of that peer (besides its
#: sessions' own ``session:<id>``); ``*``, every event, takes in both.
FOLLOWED: Mapping[str, tuple[str, ...]] = {
    "sessions": ("sessions",),
    "approvals": ("approvals",),
    ALL: ("sessions", "approvals"),
}

#: The share of ``[cache] max_bytes`` the peers' session lists may hold (when peers are
#: configured; the histories' pages have the rest).
PEERS_SHARE = 4


def peers_budget(config: Config) -> int:
    """The bytes the peers' session lists may hold, all peers together."""
    return config.cache.max_bytes // PEERS_SHARE if config.peers else 0


class Peers:
    """Every configured peer's link, by name, listed in :class:`Computers`."""

    def __init__(
        self,
        bus: Bus,
        computers: Computers,
        peers: Mapping[str, PeerConfig],
        here: str,
        max_bytes: int,
    ) -> None:
        self._bus = bus
        self._max_bytes = max_bytes
        self._computers = computers
        self._here = here
        self._http: aiohttp.ClientSession | None = None
        self.links: dict[str, PeerLink] = {}
        self.relays: dict[str, Relay] = {}
        self._leaving: list[Relay] = []  # relays of removed or changed peers, in their grace
        self._watched: set[str] = set()  # the session topics local clients follow
        self.reconfigure(peers, max_bytes)
        bus.on_interest = self._interest

    def _client(self) -> aiohttp.ClientSession:
        """The one client session of every peer's requests (made on first use: it needs the
        running event loop)."""
        if self._http is None or self._http.closed:
            # no cookies: a peer's answers must not change what the next request says
            self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._http

    def reconfigure(self, peers: Mapping[str, PeerConfig], max_bytes: int) -> None:
        """Follow a new ``[peers]``: new links for new or changed peers (a changed key in the
        environment counts), none for removed ones; their lists within ``max_bytes``."""
        each = max_bytes // max(1, len(peers))
        for name in [n for n in self.links if n not in peers]:
            self.links.pop(name)
            self._drop_relay(name)
            self._computers.remove(name)
            log.info("peer_removed", peer=name)
        for name, config in peers.items():
            old = self.links.get(name)
            key = os.environ.get(config.api_key_env) if config.api_key_env else None
            if old is not None and old.config == config and old.key == key:
                old.sessions.resize(each)
                continue
            link = self.links[name] = PeerLink(
                name, config, http=self._client, bus=self._bus, here=self._here, max_bytes=each
            )
            self._computers.add(name, link.current)
            self._drop_relay(name)
            self.relays[name] = Relay(link, self._bus)
            if old is None:
                log.info("peer_added", peer=name, url=link.url)
        if self._watched:
            self._sync()

    def _drop_relay(self, name: str) -> None:
        relay = self.relays.pop(name, None)
        if relay is not None:
            relay.want(())  # closed after its grace (no await here: a reload is synchronous)
            self._leaving = [r for r in self._leaving if r.running]
            self._leaving.append(relay)

    def _interest(self, topic: str, held: bool) -> None:
        """A local client began (or the last one stopped) following ``topic``."""
        if topic not in FOLLOWED and not topic.startswith("session:"):
            return
        if held:
            self._watched.add(topic)
        else:
            self._watched.discard(topic)
        self._sync()

    def _sync(self) -> None:
        """Each peer's relay follows what local clients follow of it."""
        for name, relay in self.relays.items():
            kept = self.links[name].sessions
            topics: set[str] = set()
            for topic in self._watched:
                if topic in FOLLOWED:
                    topics.update(FOLLOWED[topic])
                elif kept.get(topic.partition(":")[2]) is not None:
                    topics.add(topic)
            relay.want(topics)

    def find(self, session_id: str) -> tuple[PeerLink, RemoteSession] | None:
        """The peer whose list holds ``session_id``, and the session, if one does."""
        for link in self.links.values():
            found = link.sessions.get(session_id)
            if found is not None:
                return link, found
        return None

    async def lists(self, only: str | None = None) -> list[tuple[PeerLink, PeerSessions]]:
        """Each peer's (or only the peer ``only``'s) current session list, by name."""
        links = [self.links[n] for n in sorted(self.links) if only is None or n == only]
        found = await asyncio.gather(*(link.current_sessions() for link in links))
        return list(zip(links, found, strict=True))

    def get(self, name: str) -> PeerLink | None:
        """The link of the peer called ``name``, if one is configured."""
        return self.links.get(name)

    async def close(self) -> None:
        """Stop the relays and close the peers' client session."""
        self._bus.on_interest = None
        for relay in [*self.relays.values(), *self._leaving]:
            await relay.close()
        if self._http is not None:
            await self._http.close()
            self._http = None

"""The peers' links (``[peers.NAME]``), made and remade from the configuration, and the one
HTTP client session they all share."""

from __future__ import annotations

import os
from collections.abc import Mapping

import aiohttp
import structlog

from aiosvc.bus import Bus
from aiosvc.config import PeerConfig
from aiosvc.peers.computers import Computers
from aiosvc.peers.link import PeerLink

log = structlog.get_logger(__name__)


class Peers:
    """Every configured peer's link, by name, listed in :class:`Computers`."""

    def __init__(
        self,
        bus: Bus,
        computers: Computers,
        peers: Mapping[str, PeerConfig],
        here: str,
    ) -> None:
        self._bus = bus
        self._computers = computers
        self._here = here
        self._http: aiohttp.ClientSession | None = None
        self.links: dict[str, PeerLink] = {}
        self.reconfigure(peers)

    def _client(self) -> aiohttp.ClientSession:
        """The one client session of every peer's requests (made on first use: it needs the
        running event loop)."""
        if self._http is None or self._http.closed:
            # no cookies: a peer's answers must not change what the next request says
            self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._http

    def reconfigure(self, peers: Mapping[str, PeerConfig]) -> None:
        """Follow a new ``[peers]``: new links for new or changed peers (a changed key in the
        environment counts), none for removed ones."""
        for name in [n for n in self.links if n not in peers]:
            self.links.pop(name)
            self._computers.remove(name)
            log.info("peer_removed", peer=name)
        for name, config in peers.items():
            old = self.links.get(name)
            key = os.environ.get(config.api_key_env) if config.api_key_env else None
            if old is not None and old.config == config and old.key == key:
                continue
            link = self.links[name] = PeerLink(
                name, config, http=self._client, bus=self._bus, here=self._here
            )
            self._computers.add(name, link.current)
            if old is None:
                log.info("peer_added", peer=name, url=link.url)

    def get(self, name: str) -> PeerLink | None:
        """The link of the peer called ``name``, if one is configured."""
        return self.links.get(name)

    async def close(self) -> None:
        """Close the peers' client session."""
        if self._http is not None:
            await self._http.close()
            self._http = None

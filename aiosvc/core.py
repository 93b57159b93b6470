"""The core without the web layer: one factory for the database, store, bus, cache, agents,
command service, projects, computers and peers (:func:`build_core`), and their lifecycle in
dependency order.

``create_app`` puts the web layer on top of the core this builds; tests of the core use it as
it is, so they run what the daemon runs.
"""

from __future__ import annotations

import attrs
import structlog

from aiosvc.agents import AgentRegistry
from aiosvc.bus import Bus
from aiosvc.cache import Cache
from aiosvc.commands.service import CommandService
from aiosvc.commands.startup import Startup
from aiosvc.config import Config
from aiosvc.metrics import Metrics
from aiosvc.peers.computers import Computers
from aiosvc.peers.links import Peers, peers_budget
from aiosvc.projects import Projects
from aiosvc.store import Database, Store
from aiosvc.store.logins import Logins

log = structlog.get_logger(__name__)

#: Event ids reserved in the store at a time (see :class:`aiosvc.bus.Bus`).
EVENT_ID_BLOCK = 1 << 20


@attrs.define(eq=False)
class Core:
    """The core's parts, opened by :meth:`open` and :meth:`start`, closed by :meth:`close`."""

    metrics: Metrics
    database: Database
    store: Store
    bus: Bus
    cache: Cache
    agents: AgentRegistry
    commands: CommandService
    logins: Logins
    projects: Projects
    computers: Computers
    peers: Peers
    _startup: Startup | None = None

    async def open(self) -> None:
        """Open the database (then :meth:`start`, and whatever happens, :meth:`close`)."""
        await self.database.open()
        await self.logins.load()

    async def start(self) -> None:
        """Settle the previous run, number events, load the cache and resume queued work (or
        serve reads until the disk lets all that happen: see :class:`Startup`)."""
        self._startup = Startup(
            self.store, self.bus, self.cache, self.commands, block=EVENT_ID_BLOCK
        )
        await self._startup.begin()
        await self.projects.start()

    async def close(self, grace_s: float) -> None:
        """Stop the work (running replies get ``grace_s``), then close in reverse order."""
        if self._startup is not None:
            await self._startup.close()
        await self.projects.close()
        await self.peers.close()
        await self.commands.stop(grace_s)
        await self.agents.close()
        self.cache.close()
        await self.bus.close()
        await self.logins.close()
        await self.database.close()


def build_core(
    config: Config,
    *,
    metrics: Metrics | None = None,
    agents: AgentRegistry | None = None,
) -> Core:
    """Make the core's parts from ``config`` (``agents`` in place of the configured ones)."""
    metrics = metrics or Metrics()
    database = Database(config.storage.db, metrics)
    store = Store(database)
    bus = Bus(
        buffer_size=config.events.buffer_size,
        max_bytes=config.events.max_bytes,
        block=EVENT_ID_BLOCK,
        metrics=metrics,
    )
    # the peers' session lists take their share of the cache's budget
    cache = Cache(store, bus, max_bytes=config.cache.max_bytes - peers_budget(config))
    agents = agents or AgentRegistry.from_config(config.agents)
    commands = CommandService(
        store=store,
        bus=bus,
        cache=cache,
        agents=agents,
        limits=config.limits,
        computer=config.server.computer,
        approval_timeout_s=config.approvals.timeout_s,
        metrics=metrics,
    )
    logins = Logins(database, ttl_s=config.server.login_ttl_s)
    projects = Projects(store, bus, config.projects, config.server.computer)
    computers = Computers(cache, config.server.computer)
    peers = Peers(bus, computers, config.peers, config.server.computer, peers_budget(config))
    return Core(
        metrics,
        database,
        store,
        bus,
        cache,
        agents,
        commands,
        logins,
        projects,
        computers,
        peers,
    )

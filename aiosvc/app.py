"""``create_app(config)``: the one place that wires the service together (tests use it too).

Coupling to aiohttp's internals (marked ``# aiohttp-internals:``): a reload sets the body
size limit through ``Application._client_max_size``, which aiohttp reads per request (pinned
by ``tests/test_reload.py``, whose bodies over the old and the new limit get their answers).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import attrs
import structlog
from aiohttp import web

from aiosvc import logs
from aiosvc.config import Config, Settings
from aiosvc.core import build_core
from aiosvc.events import EventType
from aiosvc.metrics import Metrics
from aiosvc.models import ApprovalStatus
from aiosvc.peers.links import peers_budget
from aiosvc.web import (
    approvals,
    computers,
    configuration,
    dashboard,
    login,
    projects,
    sessions,
    sse,
    system,
    ws,
)
from aiosvc.web.first_page import FirstPage
from aiosvc.web.front_door import FrontDoor
from aiosvc.web.keys import (
    ACCESS_GATE,
    AGENTS,
    BUS,
    CACHE,
    COMMAND_SERVICE,
    COMPUTERS,
    CORE,
    DATABASE,
    FIRST_PAGE,
    FRONT_DOOR,
    METRICS,
    METRICS_REGISTRY,
    PEERS,
    PROJECTS,
    SETTINGS,
    STARTED_AT,
    STORE,
    STREAMS,
)
from aiosvc.web.open_streams import OpenStreams
from aiosvc.web.remote import MERGED, MergedMemo
from aiosvc.web.security import AccessGate
from aiosvc.web.server import HANDLER_ARGS

log = structlog.get_logger(__name__)

#: How long closing every open stream may take at shutdown.
STREAM_CLOSE_TIMEOUT_S = 5.0


def create_app(config: Config, load: Callable[[], Config] | None = None) -> web.Application:
    """Build the application: services made here, opened and closed by its lifecycle.

    ``load`` reads the configuration again for a reload (as at start: same file, environment
    and flags); without it a reload finds nothing new.
    """
    settings = Settings(config, load)
    app = web.Application(
        client_max_size=config.limits.max_body_bytes,
        handler_args=dict(HANDLER_ARGS),
    )
    metrics = Metrics()
    core = app[CORE] = build_core(config, metrics=metrics)
    cache, agents, commands = core.cache, core.agents, core.commands
    gate = AccessGate(config.server, core.logins)
    app[SETTINGS] = settings
    app[DATABASE] = core.database
    app[STORE] = core.store
    app[BUS] = bus = core.bus
    app[CACHE] = cache
    app[AGENTS] = agents
    app[COMMAND_SERVICE] = commands
    app[PROJECTS] = core.projects
    app[COMPUTERS] = core.computers
    app[PEERS] = core.peers
    app[MERGED] = MergedMemo()
    streams = app[STREAMS] = OpenStreams()
    app[FIRST_PAGE] = FirstPage(cache)
    app[ACCESS_GATE] = gate
    app[STARTED_AT] = time.monotonic()
    metrics.streams_open = streams.by_transport
    metrics.approvals_pending = lambda: len(cache.approvals(status=ApprovalStatus.PENDING))
    app[METRICS] = metrics
    app[METRICS_REGISTRY] = metrics.registry()
    # Every route behind the front door (wrapped at registration: no middleware per request)
    door = app[FRONT_DOOR] = FrontDoor(config.limits, gate, metrics)
    door.add_routes(
        app.router,
        [
            system.routes,
            approvals.routes,
            login.routes,
            configuration.routes,
            sessions.routes,
            projects.routes,
            computers.routes,
            sse.routes,
            ws.routes,
            dashboard.routes,
        ],
    )

    def apply(new: Config) -> None:
        """A reload: each holder of a setting takes the new value (what reads the settings
        per request or per stream, from ``app[SETTINGS]``, needs nothing)."""
        gate.reconfigure(new.server)
        door.reconfigure(new.limits)
        # aiohttp-internals: the body size limit, read per request (no public setter).
        app._client_max_size = new.limits.max_body_bytes
        cache.reconfigure(new.cache.max_bytes - peers_budget(new))
        agents.reconfigure(new.agents)
        commands.reconfigure(new.limits, new.approvals.timeout_s)
        core.projects.reconfigure(new.projects, new.server.computer)
        core.peers.reconfigure(new.peers, peers_budget(new))
        logs.set_level(new.server.log_level)

    settings.on_change(apply)
    settings.on_reload(
        lambda outcome: bus.publish(EventType.CONFIG_RELOADED, ("system",), attrs.asdict(outcome))
    )
    app.cleanup_ctx.append(_core)
    app.on_shutdown.append(_drain)
    return app


async def _core(app: web.Application) -> AsyncIterator[None]:
    """Open the core (store, event ids, cache, resumed work); close it all in reverse."""
    core = app[CORE]
    await core.open()
    try:
        await core.start()  # settles the previous run, or serves reads until it can
        yield
    finally:
        await core.close(app[SETTINGS].config.server.shutdown_timeout_s)
        log.info("service_stopped")


async def _drain(app: web.Application) -> None:
    """``on_shutdown``: stop taking work, let running replies finish within the bound (their
    watchers see them end), then close every stream: 1001, or a final SSE event."""
    await app[COMMAND_SERVICE].stop(app[SETTINGS].config.server.shutdown_timeout_s)
    await app[STREAMS].close_all(within_s=STREAM_CLOSE_TIMEOUT_S)

"""``create_app(config)``: the one place that wires the service together (tests use it too)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from aiosvc.agents import AgentRegistry
from aiosvc.bus import Bus
from aiosvc.cache import Cache
from aiosvc.clock import utcnow
from aiosvc.commands.service import CommandService
from aiosvc.config import Config
from aiosvc.keys import (
    AGENTS,
    BUS,
    CACHE,
    COMMANDS,
    CONFIG,
    DATABASE,
    GATE,
    METRICS,
    METRICS_REGISTRY,
    STARTED_AT,
    STORE,
    STREAMS,
)
from aiosvc.metrics import Metrics
from aiosvc.models import ApprovalStatus
from aiosvc.store import Database, Store
from aiosvc.web import requests, sessions, sse, system, ws
from aiosvc.web.front_door import FrontDoor
from aiosvc.web.security import Gate
from aiosvc.web.streams import OpenStreams

log = structlog.get_logger(__name__)

#: Event ids reserved in the store at a time (see :class:`aiosvc.bus.Bus`).
EVENT_ID_BLOCK = 1 << 20
#: How long closing every open stream may take at shutdown.
STREAM_CLOSE_TIMEOUT_S = 5.0


def create_app(config: Config) -> web.Application:
    """Build the application: services made here, opened and closed by its lifecycle."""
    gate = Gate(config.server)
    app = web.Application(
        client_max_size=config.limits.max_body_bytes,
        handler_args={"max_field_size": 16_384},
    )
    metrics = Metrics()
    database = Database(config.storage.db, metrics)
    store = Store(database)
    bus = Bus(buffer_size=config.events.buffer_size, block=EVENT_ID_BLOCK, metrics=metrics)
    first_page = min(requests.DEFAULT_LIMIT, config.limits.max_page_size)
    cache = Cache(store, bus, first_page_size=first_page)
    agents = AgentRegistry.from_config(config.agents)
    app[CONFIG] = config
    app[DATABASE] = database
    app[STORE] = store
    app[BUS] = bus
    app[CACHE] = cache
    app[AGENTS] = agents
    app[COMMANDS] = CommandService(
        store=store,
        bus=bus,
        cache=cache,
        agents=agents,
        limits=config.limits,
        computer=config.server.computer,
        approval_timeout_s=config.approvals.timeout_s,
        metrics=metrics,
    )
    streams = app[STREAMS] = OpenStreams()
    app[GATE] = gate
    app[STARTED_AT] = time.monotonic()
    metrics.streams_open = streams.by_transport
    metrics.approvals_pending = lambda: len(cache.approvals(status=ApprovalStatus.PENDING))
    app[METRICS] = metrics
    app[METRICS_REGISTRY] = metrics.registry()
    # Every route behind the front door (wrapped at registration: no middleware per request)
    FrontDoor(config.limits, gate, metrics).add_routes(
        app.router, [system.routes, sessions.routes, sse.routes, ws.routes]
    )
    app.cleanup_ctx.append(_core)
    app.on_shutdown.append(_drain)
    return app


async def _core(app: web.Application) -> AsyncIterator[None]:
    """Open the store, number events, load the cache, resume work; undo it all in reverse."""
    database, store, bus, cache = app[DATABASE], app[STORE], app[BUS], app[CACHE]
    await database.open()
    try:
        recovery = await store.recover(utcnow())
        if recovery.failed_replies or recovery.expired_approvals:
            # the previous run stopped without finishing these (a crash, a kill)
            log.warning(
                "recovered_interrupted_work",
                failed_replies=recovery.failed_replies,
                expired_approvals=recovery.expired_approvals,
                requeued_replies=len(recovery.requeued),
            )
        first_id, reserved = await store.reserve_event_ids(EVENT_ID_BLOCK)
        bus.start_at(first_id, reserved, store.set_event_ids_reserved)
        await cache.load()
        app[COMMANDS].resume(recovery)
        log.info("service_started", db=str(database.path), first_event_id=first_id)
        yield
    finally:
        await app[COMMANDS].stop(app[CONFIG].server.shutdown_timeout_s)
        await app[AGENTS].close()
        cache.close()
        await bus.close()
        await database.close()
        log.info("service_stopped")


async def _drain(app: web.Application) -> None:
    """``on_shutdown``: stop taking work, let running replies finish within the bound (their
    watchers see them end), then close every stream: 1001, or a final SSE event."""
    await app[COMMANDS].stop(app[CONFIG].server.shutdown_timeout_s)
    await app[STREAMS].close_all(within_s=STREAM_CLOSE_TIMEOUT_S)

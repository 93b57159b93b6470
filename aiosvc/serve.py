"""Running the service: bind (or take systemd's sockets), serve until a signal, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import resource
import signal

import structlog
from aiohttp import web

from aiosvc import logthrottle, systemd
from aiosvc.app import create_app
from aiosvc.config import Config
from aiosvc.web.server import make_runner

log = structlog.get_logger(__name__)


class RefusedToStart(Exception):
    """The configuration is unsafe or the address cannot be bound."""


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` names only loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: Config) -> None:
    """Refuse to listen beyond loopback while no API key is configured."""
    if not config.server.api_keys and not is_loopback(config.server.host):
        raise RefusedToStart(
            f"refusing to listen on {config.server.host!r} without an API key: anyone who can "
            "reach it could run agents. Set server.api_keys (or AIOSVC_API_KEYS), or bind a "
            "loopback address such as 127.0.0.1"
        )


def raise_open_files_limit() -> None:
    """Let the process hold as many sockets as the system allows it (streams are long-lived;
    a soft limit of 1024 would refuse connections well under the configured limits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    check_exposure(config)
    raise_open_files_limit()
    logthrottle.install(asyncio.get_running_loop())  # storms of loop errors: a line a spell
    app = create_app(config)
    # Connections capped when accepted, deadlines on each (aiosvc.web.server)
    runner = make_runner(app, config)
    await runner.setup()
    # Everything made at startup lives as long as the process: keep it out of the collector's
    # full passes, which otherwise walk it all and pause every stream (tens of ms).
    gc.freeze()
    try:
        sockets = systemd.listen_sockets()
        sites: list[web.BaseSite] = (
            [web.SockSite(runner, sock) for sock in sockets]
            if sockets
            else [web.TCPSite(runner, config.server.host, config.server.port, reuse_address=True)]
        )
        for site in sites:
            try:
                await site.start()
            except OSError as exc:
                raise RefusedToStart(f"cannot listen on {site.name}: {exc.strerror}") from None
        log.info("listening", addresses=[site.name for site in sites])
        systemd.notify("READY=1")
        await _wait_for_signal()
    finally:
        systemd.notify("STOPPING=1")
        await runner.cleanup()


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    interval = systemd.watchdog_interval()
    pinger = asyncio.create_task(systemd.watchdog(interval)) if interval else None
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if pinger is not None:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

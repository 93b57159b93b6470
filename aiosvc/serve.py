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

from aiosvc import __version__, systemd
from aiosvc.app import create_app
from aiosvc.config import Config

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
    app = create_app(config)
    # A client that goes away cancels its handler: streams end at once instead of when a
    # write finally fails. Commands are shielded, so a write still completes.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.server.shutdown_timeout_s,
        handler_cancellation=True,
    )
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
        log.info("listening", addresses=[site.name for site in sites], **startup_facts(config))
        systemd.notify("READY=1")
        await _wait_for_signal()
    finally:
        systemd.notify("STOPPING=1")
        await runner.cleanup()


def startup_facts(config: Config) -> dict[str, object]:
    """What the startup line says besides the addresses: version, files, agents, auth mode
    (the number of keys, never the keys)."""
    keys = len(config.server.api_keys)
    return {
        "version": __version__,
        "config": str(config.source) if config.source is not None else None,
        "db": str(config.storage.db),
        "agents": {name: agent.kind for name, agent in config.agents.backends.items()},
        "default_agent": config.agents.default,
        "auth": "keys" if keys else "loopback_only",
        "key_count": keys,
        "log_level": config.server.log_level,
    }


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

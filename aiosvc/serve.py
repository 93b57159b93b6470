"""Running the service: lock the database, bind (or take systemd's sockets), open and recover,
serve until a signal (SIGHUP reloads the configuration), stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import ipaddress
import resource
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from aiohttp import web

from aiosvc import __version__, systemd
from aiosvc.app import create_app
from aiosvc.config import Config, ConfigError, Settings
from aiosvc.logs import throttle
from aiosvc.web.keys import DATABASE, SETTINGS
from aiosvc.web.server import make_runner

log = structlog.get_logger(__name__)

#: The longest listen backlog Linux grants (a longer one is cut to it, silently).
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


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


def socket_is_loopback(sock: socket.socket) -> bool:
    """Tell whether a listening socket takes connections from this machine only."""
    if sock.family == socket.AF_UNIX:
        return True
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    address = ipaddress.ip_address(str(sock.getsockname()[0]).split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_sockets(config: Config, sockets: Sequence[socket.socket]) -> None:
    """The rule of :func:`check_exposure` for sockets systemd passes: each must be loopback
    (or a unix socket) while no API key is configured."""
    exposed = [socket_name(s) for s in sockets if not socket_is_loopback(s)]
    if exposed and not config.server.api_keys:
        raise RefusedToStart(
            f"refusing to serve on {', '.join(exposed)} (a socket passed by systemd) without "
            "an API key: anyone who can reach it could run agents. Set server.api_keys (or "
            "AIOSVC_API_KEYS), or make the socket unit listen on a loopback address such as "
            "ListenStream=127.0.0.1:8420"
        )


def socket_name(sock: socket.socket) -> str:
    """The URL a listening socket serves, as aiohttp names its sites."""
    if sock.family == socket.AF_UNIX:
        path: str | bytes = sock.getsockname()
        shown = path.decode(errors="replace") if isinstance(path, bytes) else path
        return f"http://unix:{shown}:"
    host, port = sock.getsockname()[:2]
    return _url(sock.family, host, port)


def _url(family: int, host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"


def bind(host: str, port: int, backlog: int = 4096) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to (as aiohttp's TCPSite would
    bind them), or :class:`RefusedToStart` with none left open."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise RefusedToStart(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                url = _url(family, str(address[0]), int(address[1]))
                raise RefusedToStart(f"cannot listen on {url}: {exc.strerror}") from None
            # listening at once: connections that come during startup wait in the backlog
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def check_backlog(backlog: int) -> None:
    """Warn when the kernel grants a shorter listen backlog than ``backlog``: bursts past
    its own limit wait for TCP's retransmission (a second or more)."""
    try:
        granted = int(SOMAXCONN.read_text())
    except (OSError, ValueError):  # not Linux: nothing to read
        return
    if backlog > granted:
        log.warning(
            "listen_backlog_capped",
            listen_backlog=backlog,
            somaxconn=granted,
            reason="the kernel's net.core.somaxconn is lower: raise it with sysctl",
        )


def raise_open_files_limit() -> None:
    """Let the process hold as many sockets as the system allows it (streams are long-lived;
    a soft limit of 1024 would refuse connections well under the configured limits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: Config, load: Callable[[], Config] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads the
    configuration through ``load``.

    The order makes a daemon that cannot run change nothing: the bind policy is checked,
    the database's lock taken (a second daemon on it stops here), the sockets bound (or
    systemd's taken); only then is the database opened and the previous run's work
    recovered.
    """
    passed = systemd.listen_sockets()
    sockets = list(passed)
    loop = asyncio.get_running_loop()
    try:
        if passed:
            check_sockets(config, passed)
        else:
            check_exposure(config)
        raise_open_files_limit()
        throttle.install(loop)  # storms of loop errors: a line a spell
        app = create_app(config, load)
        # Caught from now on (its default action ends the process); it waits for the startup
        reloads = _Reloads(app[SETTINGS])
        loop.add_signal_handler(signal.SIGHUP, reloads)
        lock = app[DATABASE].lock
        lock.acquire()
        try:
            if not passed:
                sockets = bind(config.server.host, config.server.port, config.limits.listen_backlog)
            exposed = [socket_name(s) for s in sockets if not socket_is_loopback(s)]
            if exposed:
                app[SETTINGS].add_check(functools.partial(_keys_kept, exposed))
            await _run(app, sockets, config, reloads)
        finally:
            lock.release()  # (the database's close has let go of it already, if it opened)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for sock in sockets:
            sock.close()


class _Reloads:
    """SIGHUP: reload the configuration (the reload logs its outcome); one that comes while
    the service starts is done once it is up."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.up = False
        self.asked = False

    def __call__(self) -> None:
        if not self.up:
            self.asked = True
            return
        with contextlib.suppress(ConfigError):  # logged; the running configuration stays
            self.settings.reload()

    def start(self) -> None:
        """The service is up: reload now if asked meanwhile, at once from now on."""
        self.up = True
        if self.asked:
            self.asked = False
            self()


def _keys_kept(exposed: list[str], config: Config) -> list[str]:
    """A reload check: keys cannot all go while listening beyond loopback."""
    if config.server.api_keys:
        return []
    return [
        f"{config.source}: server.api_keys: refusing to remove every API key while listening "
        f"on {', '.join(exposed)}: anyone who can reach it could run agents"
    ]


async def _run(
    app: web.Application, sockets: list[socket.socket], config: Config, reloads: _Reloads
) -> None:
    """Open the app (database, recovery) and serve it on the bound sockets until a signal."""
    # Connections capped when accepted, deadlines on each (aiosvc.web.server)
    runner = make_runner(app, config)
    await runner.setup()
    # Everything made at startup lives as long as the process: keep it out of the collector's
    # full passes, which otherwise walk it all and pause every stream (tens of ms).
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # before READY=1: from then on systemd may stop or reload at any moment
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        # (a site listens again with its backlog: systemd's sockets get ours too, once served)
        backlog = config.limits.listen_backlog
        check_backlog(backlog)
        sites = [web.SockSite(runner, sock, backlog=backlog) for sock in sockets]
        app[SETTINGS].on_change(_Relisten(sockets, backlog))
        for site in sites:
            await site.start()
        log.info("listening", addresses=[site.name for site in sites], **startup_facts(config))
        reloads.start()
        systemd.notify("READY=1")
        await _wait_for(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        systemd.notify("STOPPING=1")
        await runner.cleanup()


class _Relisten:
    """A reload that changes ``limits.listen_backlog``: listen again with it (Linux changes a
    listening socket's backlog in place; connections already queued stay)."""

    def __init__(self, sockets: list[socket.socket], backlog: int) -> None:
        self.sockets = sockets
        self.backlog = backlog

    def __call__(self, config: Config) -> None:
        backlog = config.limits.listen_backlog
        if backlog == self.backlog:
            return
        self.backlog = backlog
        check_backlog(backlog)
        for sock in self.sockets:
            sock.listen(backlog)


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


async def _wait_for(stop: asyncio.Event) -> None:
    """Ping the watchdog (if systemd asks for it) until ``stop`` is set."""
    interval = systemd.watchdog_interval()
    pinger = asyncio.create_task(systemd.watchdog(interval)) if interval else None
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        if pinger is not None:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

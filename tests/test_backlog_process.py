"""The listen backlog, through a real ``aiosvc serve``: configured (reaching the socket, a
reload changing it), capped by the kernel with a warning, and long enough by default that a
burst of connections is queued rather than dropped."""

from __future__ import annotations

import asyncio
import resource
import select
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.rawhttp import answer, limits_config, log_lines, until_closed
from tests.serving import Server

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
BURST = 2000


def somaxconn() -> int:
    """The longest backlog the kernel grants."""
    return int(SOMAXCONN.read_text())


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on ``port``, as the kernel holds it (``ss``
    shows it as a listening socket's Send-Q)."""
    shown = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown[0] == "LISTEN", shown
    return int(shown[2])


async def reload(server: Server) -> list[str]:
    """Reload the configuration file: the keys it changed."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.url + "/api/v1/config/reload") as response,
    ):
        assert response.status == 200, await response.text()
        changed: list[str] = (await response.json())["data"]["changed"]
        return changed


async def health(server: Server) -> int:
    """The status of ``/health``."""
    async with aiohttp.ClientSession() as http, http.get(server.url + "/health") as response:
        return response.status


async def test_the_listen_backlog_reaches_the_socket_and_a_reload_changes_it(
    db_path: Path, tmp_path: Path, servers: list[Server]
) -> None:
    granted = somaxconn()
    config = limits_config(tmp_path)
    server = Server(db_path, config=config)
    servers.append(server)
    await server.start()
    assert listen_backlog(server.port) == min(4096, granted)  # the default
    config.write_text("[limits]\nlisten_backlog = 1500\n")
    assert await reload(server) == ["limits.listen_backlog"]
    assert listen_backlog(server.port) == 1500
    assert await health(server) == 200
    # Above what the kernel grants: cut to it, and said so.
    if granted < 65535:
        config.write_text(f"[limits]\nlisten_backlog = {granted + 1}\n")
        assert await reload(server) == ["limits.listen_backlog"]
        assert listen_backlog(server.port) == granted
        (warning,) = [e for e in server.events() if e["event"] == "listen_backlog_capped"]
        assert (warning["level"], warning["listen_backlog"], warning["somaxconn"]) == (
            "warning",
            granted + 1,
            granted,
        )
    assert await server.stop() == 0


async def test_a_backlog_over_the_kernel_s_is_warned_about_at_start(
    db_path: Path, tmp_path: Path, servers: list[Server]
) -> None:
    granted = somaxconn()
    if granted >= 65535:
        pytest.skip("net.core.somaxconn is at the configurable maximum")
    server = Server(db_path, config=limits_config(tmp_path, listen_backlog=granted + 1))
    servers.append(server)
    await server.start()
    assert listen_backlog(server.port) == granted
    events = [e["event"] for e in log_lines(server.log())]
    assert events.index("listen_backlog_capped") < events.index("listening")
    assert await server.stop() == 0


def connect_all(port: int, count: int) -> tuple[list[socket.socket], float]:
    """Open ``count`` connections at once, as fast as they can be asked for: the sockets, and
    how long the slowest handshake took after the last was asked for (the kernel completes a
    loopback handshake at once, unless the listen queue is full and it drops the SYN; TCP
    then sends it again after a second)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sockets.append(sock)
        sock.connect_ex(("127.0.0.1", port))
    asked = time.monotonic()
    poller = select.poll()
    waiting = {sock.fileno() for sock in sockets}
    for fd in waiting:
        poller.register(fd, select.POLLOUT)
    while waiting and time.monotonic() - asked < 20:
        for fd, _ in poller.poll(50):
            waiting.discard(fd)
            poller.unregister(fd)
    assert not waiting, f"{len(waiting)} connections never completed"
    assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for sock in sockets)
    return sockets, time.monotonic() - asked


async def ask_health(sock: socket.socket) -> int:
    """Send ``GET /health`` on a connected socket: the answer's status."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return answer(await until_closed(reader, 60))[0]
    finally:
        writer.close()


async def test_a_burst_of_connections_is_queued_without_stalls(
    db_path: Path, servers: list[Server]
) -> None:
    if somaxconn() < BURST:
        pytest.skip(f"net.core.somaxconn is below {BURST}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < BURST + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, BURST * 2), hard))
    server = Server(db_path)
    servers.append(server)
    await server.start()
    try:
        sockets, slowest = connect_all(server.port, BURST)
        # Milliseconds when the queue holds the burst; 1 s or more for every dropped SYN.
        assert slowest < 0.5, f"the slowest handshake took {slowest:.2f} s"
        started = time.monotonic()
        statuses = await asyncio.gather(*(ask_health(sock) for sock in sockets))
        assert statuses == [200] * BURST
        assert time.monotonic() - started < 30
        assert await health(server) == 200
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert await server.stop() == 0

"""No way to starve the daemon: connections capped when accepted, memory bounded before a
request's head is complete, storms of errors logged in a few lines. Through a real
``aiosvc serve`` on a real socket."""

from __future__ import annotations

import asyncio
import fcntl
import resource
import socket
import struct
from pathlib import Path

import aiohttp
import pytest

from aiosvc.web.limits import ConnectionCounter, descriptor_budget
from tests.rawhttp import (
    Clock,
    answer,
    connect,
    limits_config,
    log_lines,
    open_fds,
    until_closed,
    vm_rss_mib,
)
from tests.serving import Server

HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
TOO_MANY = {
    "error": {
        "code": "too_many_connections",
        "message": "too many connections: try again later",
        "status": 503,
    }
}


async def health(server: Server) -> int:
    """The status of ``/health`` on a new connection (0: no answer)."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def test_connections_over_the_cap_are_refused_at_once_and_the_daemon_recovers(
    db_path: Path, tmp_path: Path
) -> None:
    config = limits_config(tmp_path, max_connections=20, header_timeout_s=60.0)
    server = Server(db_path, config=config)
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    idle: list[asyncio.StreamWriter] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as held:
            async with held.get(server.url + "/health") as response:  # a keep-alive client
                assert response.status == 200
            baseline = open_fds(pid)
            for _ in range(19):  # and idle sockets take every other place
                idle.append((await connect(server.port))[1])
            await asyncio.sleep(0.3)
            for _ in range(10):
                clock = Clock()
                reader, writer = await connect(server.port)
                writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                status, headers, body = answer(await until_closed(reader, 5))
                assert clock() < 10  # at once: nothing waits for the deadline (60 s)
                assert (status, body) == (503, TOO_MANY)
                assert headers["retry-after"] == "1"
                assert len(headers["x-request-id"]) == 16
                writer.close()
            assert open_fds(pid) <= baseline + 19 + 4
            assert await health(server) == 503
            # The client already connected keeps being served.
            async with held.get(server.url + "/health") as response:
                assert response.status == 200
            # Once the excess goes away, new clients are served again.
            for writer in idle:
                writer.close()
            idle.clear()
            async with asyncio.timeout(10):
                while await health(server) != 200:
                    await asyncio.sleep(0.05)
        refused = [
            line
            for line in log_lines(await server.settled_log())
            if line["event"] == "connection_refused"
        ]
        assert 1 <= len(refused) <= 2  # a storm is a line, then one with the count
        assert refused[0]["level"] == "warning"
        assert (refused[0]["reason"], refused[0]["limit"]) == ("limit", 20)
    finally:
        for writer in idle:
            writer.close()
        assert await server.stop() == 0


def outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None: it has none)."""
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:  # SIOCGIFADDR: the interface's address
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()))
            except OSError:  # no IPv4 address
                continue
        address = socket.inet_ntoa(packed[20:24])
        if not address.startswith("127."):
            return address
    return None


async def test_connections_over_the_per_address_cap_are_refused_local_ones_are_not_counted(
    db_path: Path, tmp_path: Path
) -> None:
    outside = outside_address()
    if outside is None:
        pytest.skip("this machine has no address beyond loopback")
    config = limits_config(tmp_path, max_connections_per_client=3, header_timeout_s=60.0)
    everywhere = ["--host", "0.0.0.0"]  # (with a key: it refuses to without one)
    server = Server(db_path, config=config, args=everywhere, env={"AIOSVC_API_KEYS": "k"})
    await server.start()
    idle = [(await asyncio.open_connection(outside, server.port))[1] for _ in range(3)]
    # Local clients all come from 127.0.0.1: that address is not capped.
    idle += [(await connect(server.port))[1] for _ in range(5)]
    try:
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection(outside, server.port)
        status, _, body = answer(await until_closed(reader, 5))
        assert (status, body) == (503, TOO_MANY)
        writer.close()
        assert await health(server) == 200
        for writer in idle[:3]:
            writer.close()
        async with asyncio.timeout(10):  # a place of that address is free again
            while True:
                reader, writer = await asyncio.open_connection(outside, server.port)
                writer.write(HEALTH)
                status = answer(await until_closed(reader, 5))[0]
                writer.close()
                if status == 200:
                    break
                await asyncio.sleep(0.05)
        refused = [
            line
            for line in log_lines(await server.settled_log())
            if line["event"] == "connection_refused"
        ]
        assert (refused[0]["reason"], refused[0]["client"]) == ("per_client_limit", outside)
    finally:
        for writer in idle:
            writer.close()
        assert await server.stop() == 0


async def send_huge_head(port: int) -> str:
    """Headers that never end, about 2 MiB of them: how the sending ended."""
    reader, writer = await connect(port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for n in range(127):
            writer.write(b"X-Pad-%d: %s\r\n" % (n, b"a" * 16_000))
            await writer.drain()
        data = await until_closed(reader, 20)
    except ConnectionError as exc:
        return type(exc).__name__
    finally:
        writer.close()
    return data.split(b"\r\n", 1)[0].decode()


async def hold_half_a_head(port: int, size: int) -> asyncio.StreamWriter:
    """A connection holding ``size`` bytes of a head that is never finished."""
    _reader, writer = await connect(port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for n in range(size // 8000):
        writer.write(b"X-Pad-%d: %s\r\n" % (n, b"a" * 7980))
    await writer.drain()
    return writer


async def test_memory_stays_bounded_under_many_half_sent_heads(
    db_path: Path, tmp_path: Path
) -> None:
    config = limits_config(tmp_path, header_timeout_s=60.0)
    server = Server(db_path, config=config)
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    held: list[asyncio.StreamWriter] = []
    try:
        assert await health(server) == 200
        rss, fds = vm_rss_mib(pid), open_fds(pid)
        # 300 clients each sending about 2 MiB of headers: each is refused past the bound.
        endings = await asyncio.gather(*(send_huge_head(server.port) for _ in range(300)))
        assert set(endings) <= {"HTTP/1.1 431 Request Header Fields Too Large"} | {
            "ConnectionResetError",
            "BrokenPipeError",
        }, set(endings)
        assert "HTTP/1.1 431 Request Header Fields Too Large" in endings
        grown = vm_rss_mib(pid) - rss
        assert grown < 48, f"{grown:.0f} MiB for 300 endless heads"
        # 300 clients each holding a head just under the bound, never finished.
        held = [await hold_half_a_head(server.port, 30_000) for _ in range(300)]
        await asyncio.sleep(1)
        grown = vm_rss_mib(pid) - rss
        assert grown < 48, f"{grown:.0f} MiB for 300 heads of 30 kB"
        assert open_fds(pid) <= fds + 300 + 8
        assert await health(server) == 200
    finally:
        for writer in held:
            writer.close()
        assert await server.stop() == 0


async def test_a_storm_of_accept_errors_is_logged_in_a_few_lines(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    waiting: list[asyncio.StreamWriter] = []
    try:
        # Descriptors run out (as if something else took them): accept() fails.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid), hard))
        for _ in range(50):
            waiting.append((await connect(server.port))[1])
        await asyncio.sleep(3)
        lines = [line for line in log_lines(server.log()) if line["event"] == "event_loop_error"]
        assert 1 <= len(lines) <= 2, len(lines)
        assert lines[0]["message"] == "socket.accept() out of system resource"
        assert "Too many open files" in lines[0]["exception"]
        # With descriptors back, the daemon serves again.
        for writer in waiting:
            writer.close()
        waiting.clear()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        async with asyncio.timeout(10):
            while await health(server) != 200:
                await asyncio.sleep(0.1)
    finally:
        for writer in waiting:
            writer.close()
        assert await server.stop() == 0


def test_the_cap_stays_below_the_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        # 128 descriptors for the daemon's own use, 64 (1/16) for lingering sockets
        assert descriptor_budget(4096) == (1024 - 128 - 64, 64)
        assert descriptor_budget(100) == (100, 64)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connections_are_counted_in_all_and_per_address() -> None:
    counter = ConnectionCounter(3, 2)
    assert [counter.admit() for _ in range(4)] == [True, True, True, False]
    assert [counter.enter("a"), counter.enter("a"), counter.enter("a")] == [True, True, False]
    counter.leave(None)  # the third, refused for its address, closes
    assert counter.admit()
    assert counter.enter("b")
    counter.leave("a")
    assert (counter.total, counter.per_client) == (2, {"a": 1, "b": 1})

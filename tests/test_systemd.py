"""systemd integration against real sockets: sd_notify datagrams, socket activation, watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from aiosvc import serve, systemd
from aiosvc.config import load_config
from tests import installed
from tests.serving import free_port
from tests.test_backlog_process import listen_backlog, somaxconn

ROOT = Path(__file__).resolve().parent.parent
#: Runs ``argv[2:]`` with fd ``argv[1]`` moved to fd 3, as systemd hands over a socket.
ON_FD_3 = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket's path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp" if os.path.isdir("/tmp") else None))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listener(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    path = short_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock``, without waiting."""
    received = []
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            try:
                received.append(sock.recv(4096))
            except BlockingIOError:
                return received
    finally:
        sock.settimeout(timeout)


# ---- notify


def test_notify_sends_the_state_to_the_socket_path(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": address}) is True
    assert sock.recv(4096) == b"READY=1"
    assert systemd.notify("STATUS=serving\nMAINPID=1", {"NOTIFY_SOCKET": address}) is True
    assert sock.recv(4096) == b"STATUS=serving\nMAINPID=1"
    assert pending(sock) == []


def test_notify_reaches_an_abstract_namespace_address() -> None:
    name = f"aiosvc-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}], ids=["unset", "empty"])
def test_notify_without_a_socket_returns_false(env: dict[str, str]) -> None:
    assert systemd.notify("READY=1", env) is False


def test_notify_to_a_socket_nobody_binds_returns_false(short_dir: Path) -> None:
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": str(short_dir / "gone")}) is False
    name = f"@aiosvc-test-nobody-{uuid.uuid4().hex}"
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": name}) is False


# ---- listen_sockets and watchdog_interval


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"LISTEN_FDS": "1"},
        {"LISTEN_PID": "1", "LISTEN_FDS": "1"},
        {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2"},
        {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"},
        {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "many"},
    ],
    ids=["unset", "no-pid", "pid-1", "another-pid", "zero-fds", "bad-count"],
)
def test_listen_sockets_ignores_what_is_not_for_this_process(env: dict[str, str]) -> None:
    assert systemd.listen_sockets(env) == []


def test_listen_sockets_takes_the_passed_descriptors_from_fd_3() -> None:
    # A child process, so that fd 3 is ours to hand over as systemd would.
    code = (
        "import os, socket\n"
        "from aiosvc import systemd\n"
        "env = {'LISTEN_PID': str(os.getpid()), 'LISTEN_FDS': '1'}\n"
        "(sock,) = systemd.listen_sockets(env)\n"
        "print(sock.fileno(), sock.family.name, sock.type.name, sock.getsockname()[0],\n"
        "      sock.getsockname()[1] == int(os.environ['PORT']), os.get_inheritable(3))\n"
    )
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        # this one tests the module in the source tree, not the installed program
        env = installed.environ(PYTHONPATH=str(ROOT), PORT=str(server.getsockname()[1]))
        # what systemd does: the listening socket is the child's fd 3
        result = subprocess.run(
            [sys.executable, "-c", ON_FD_3, str(server.fileno()), sys.executable, "-c", code],
            env=env,
            pass_fds=(server.fileno(),),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "3 AF_INET SOCK_STREAM 127.0.0.1 True False\n"


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "3000000"}, 1.5),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.25),
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
    ids=["no-pid", "this-pid", "unset", "empty", "another-pid", "not-a-number"],
)
def test_watchdog_interval_is_half_the_period(env: dict[str, str], interval: float | None) -> None:
    assert systemd.watchdog_interval(env) == interval


# ---- end to end: a real ``aiosvc serve`` under a fake systemd


def child_env(**extra: str) -> dict[str, str]:
    """The environment of the installed ``aiosvc serve``: the test's, without aiosvc's or a
    supervisor's variables, logging JSON, plus ``extra``."""
    return installed.environ(AIOSVC_LOG_FORMAT="json", **extra)


def start(
    argv: list[str], env: dict[str, str], log: Path, processes: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output in ``log``; the fixture reaps it."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=log.parent)
    processes.append(process)
    return process


def serve_argv(db: Path, port: int) -> list[str]:
    """The command line of the installed ``aiosvc serve`` on ``db`` and loopback ``port``."""
    return installed.argv("serve", "--port", str(port), "--db", str(db))


async def answers(http: aiohttp.ClientSession, url: str) -> bool:
    """Tell whether ``url`` answers 200 right now."""
    try:
        async with http.get(url) as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def receive(sock: socket.socket, timeout: float = 30) -> bytes:
    """The next datagram on the non-blocking ``sock``, waiting at most ``timeout``."""
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)


async def exit_status(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """Wait for ``process`` to exit, bounded, and return its status."""
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(None, process.wait), timeout)


def log_events(log: Path) -> list[dict[str, object]]:
    """The JSON log lines in ``log`` (other lines are skipped)."""
    lines = log.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if line.startswith(b"{")]


async def test_serve_notifies_ready_once_listening_and_stopping_on_sigterm(
    tmp_path: Path,
    listener: tuple[socket.socket, str],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    sock, address = listener
    sock.setblocking(False)
    port = free_port()
    argv = serve_argv(tmp_path / "a.db", port)
    log = tmp_path / "serve.log"
    process = start(argv, child_env(NOTIFY_SOCKET=address), log, processes)
    url = f"http://127.0.0.1:{port}/health"
    received: list[bytes] = []
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(30):
            while True:
                before = pending(sock)  # taken before the probe: then it must succeed
                received += before
                ok = await answers(http, url)
                assert ok or not before, f"{before} arrived while /health did not answer"
                if ok:
                    break
                assert process.poll() is None, log.read_text(errors="replace")
                await asyncio.sleep(0.02)
        if not received:
            received.append(await receive(sock))
        assert received == [b"READY=1"]
        assert await answers(http, url)
        assert pending(sock) == []  # once, not per request
    process.send_signal(signal.SIGTERM)
    assert await receive(sock) == b"STOPPING=1"
    assert await exit_status(process) == 0
    assert pending(sock) == []
    events = [e["event"] for e in log_events(log)]
    assert events[-1] == "service_stopped"


async def test_serve_pings_the_watchdog_between_ready_and_stopping(
    tmp_path: Path,
    listener: tuple[socket.socket, str],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    sock, address = listener
    sock.setblocking(False)
    port = free_port()
    env = child_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")  # a ping every 0.1 s
    process = start(serve_argv(tmp_path / "a.db", port), env, tmp_path / "serve.log", processes)
    received = [await receive(sock)]
    while len(received) < 4:
        received.append(await receive(sock))
    process.send_signal(signal.SIGTERM)
    assert await exit_status(process) == 0
    received += pending(sock)
    assert received[0] == b"READY=1"
    assert received[-1] == b"STOPPING=1"
    assert set(received[1:-1]) == {b"WATCHDOG=1"}
    assert len(received) >= 5


async def test_serve_ignores_a_watchdog_meant_for_another_process(
    tmp_path: Path,
    listener: tuple[socket.socket, str],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    sock, address = listener
    sock.setblocking(False)
    env = child_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    argv = serve_argv(tmp_path / "a.db", free_port())
    process = start(argv, env, tmp_path / "serve.log", processes)
    assert await receive(sock) == b"READY=1"
    await asyncio.sleep(0.5)  # several watchdog periods: none may come
    assert pending(sock) == []
    process.send_signal(signal.SIGTERM)
    assert await exit_status(process) == 0
    assert pending(sock) == [b"STOPPING=1"]


SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.mark.skipif(
    SOCKET_ACTIVATE is None,
    reason="systemd-socket-activate is not on PATH (it comes with Debian's systemd package)",
)
async def test_serve_takes_a_socket_from_systemd_socket_activate(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    assert SOCKET_ACTIVATE is not None
    port, unused = free_port(), free_port()
    log = tmp_path / "activate.log"
    # systemd-socket-activate passes on only PATH, HOME, TERM, USER and what -E names
    argv = [SOCKET_ACTIVATE, "-l", f"127.0.0.1:{port}"]
    argv += ["-E", "AIOSVC_LOG_FORMAT=json"]
    argv += serve_argv(tmp_path / "a.db", unused)  # --port is moot with a passed socket
    process = start(argv, child_env(), log, processes)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http, asyncio.timeout(60):
        while True:  # the first connection launches aiosvc, which then answers it
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as response:
                    assert response.status == 200
                    body = await response.json()
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        assert body["data"]["status"] == "ok"
        assert body["data"]["db"] == "ok"
        assert not await answers(http, f"http://127.0.0.1:{unused}/health")
        # systemd's socket queues connections while aiosvc starts; serving, it takes ours
        assert listen_backlog(port) == min(4096, somaxconn())
    listening = [e for e in log_events(log) if e["event"] == "listening"]
    assert [e["addresses"] for e in listening] == [[f"http://127.0.0.1:{port}"]]
    process.send_signal(signal.SIGTERM)
    assert await exit_status(process) == 0
    assert log_events(log)[-1]["event"] == "service_stopped"


# ---- the bind policy on passed sockets


@pytest.mark.parametrize(
    ("family", "address", "loopback"),
    [
        (socket.AF_INET, ("127.0.0.1", 0), True),
        (socket.AF_INET, ("127.0.0.2", 0), True),
        (socket.AF_INET, ("0.0.0.0", 0), False),
        (socket.AF_INET6, ("::1", 0), True),
        (socket.AF_INET6, ("::", 0), False),
    ],
    ids=["127.0.0.1", "127.0.0.2", "0.0.0.0", "::1", "::"],
)
def test_a_passed_socket_is_loopback_only_on_a_loopback_address(
    family: socket.AddressFamily, address: tuple[str, int], loopback: bool
) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind(address)
        sock.listen()
        assert serve.socket_is_loopback(sock) is loopback


def test_a_unix_socket_counts_as_loopback(short_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(short_dir / "api.sock"))
        sock.listen()
        assert serve.socket_is_loopback(sock) is True
        serve.check_sockets(load_config(None, env={}), [sock])  # no key needed


def test_check_sockets_refuses_any_exposed_socket_without_a_key() -> None:
    with socket.socket() as local, socket.socket() as exposed:
        local.bind(("127.0.0.1", 0))
        exposed.bind(("0.0.0.0", 0))
        port = exposed.getsockname()[1]
        with pytest.raises(serve.RefusedToStart) as refused:
            serve.check_sockets(load_config(None, env={}), [local, exposed])
        assert str(refused.value).startswith(
            f"refusing to serve on http://0.0.0.0:{port} (a socket passed by systemd) without "
            "an API key"
        )
        keyed = load_config(None, env={"AIOSVC_API_KEYS": "k"})
        serve.check_sockets(keyed, [local, exposed])


def activate_argv(tmp_path: Path, address: str, *env: str) -> list[str]:
    """``aiosvc serve`` under systemd-socket-activate on ``address``, with ``env`` passed."""
    assert SOCKET_ACTIVATE is not None
    argv = [SOCKET_ACTIVATE, "-l", address]
    argv += ["-E", f"PYTHONPATH={ROOT}", "-E", "AIOSVC_LOG_FORMAT=json"]
    for item in env:
        argv += ["-E", item]
    return argv + serve_argv(tmp_path / "a.db", free_port())


async def knock(port: int) -> None:
    """Connect once: systemd-socket-activate starts its program on the first connection."""
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()


@pytest.mark.skipif(SOCKET_ACTIVATE is None, reason="systemd-socket-activate is not on PATH")
async def test_a_passed_socket_on_every_address_without_a_key_is_refused(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = tmp_path / "activate.log"
    process = start(activate_argv(tmp_path, f"0.0.0.0:{port}"), child_env(), log, processes)
    async with asyncio.timeout(60):
        while process.poll() is None:
            await knock(port)
            await asyncio.sleep(0.1)
    assert process.returncode == 1
    lines = log.read_text().splitlines()
    assert lines[-1] == (
        f"aiosvc: refusing to serve on http://0.0.0.0:{port} (a socket passed by systemd) "
        "without an API key: anyone who can reach it could run agents. Set server.api_keys "
        "(or AIOSVC_API_KEYS), or make the socket unit listen on a loopback address such as "
        "ListenStream=127.0.0.1:8420"
    )
    assert not (tmp_path / "a.db").exists()  # refused before the database was touched


@pytest.mark.skipif(SOCKET_ACTIVATE is None, reason="systemd-socket-activate is not on PATH")
async def test_a_passed_socket_on_every_address_serves_with_a_key(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = tmp_path / "activate.log"
    argv = activate_argv(tmp_path, f"0.0.0.0:{port}", "AIOSVC_API_KEYS=sesame")
    process = start(argv, child_env(), log, processes)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http, asyncio.timeout(60):
        while not await answers(http, url + "/health"):
            assert process.poll() is None, log.read_text(errors="replace")
            await asyncio.sleep(0.05)
        async with http.get(url + "/api/v1/sessions") as response:
            assert response.status == 401
        async with http.get(url + "/api/v1/sessions", headers={"X-API-Key": "sesame"}) as response:
            assert response.status == 200
    listening = [e for e in log_events(log) if e["event"] == "listening"]
    assert [e["addresses"] for e in listening] == [[f"http://0.0.0.0:{port}"]]
    process.send_signal(signal.SIGTERM)
    assert await exit_status(process) == 0

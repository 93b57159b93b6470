"""systemd integration without libsystemd: readiness and watchdog notifications, and
socket activation (a few lines of protocol each)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

#: The first file descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not run by systemd."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # the abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def listen_sockets(env: Mapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed to this process (socket activation), if any."""
    env = env if env is not None else os.environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog period systemd asks for, in seconds; None when there is none."""
    env = env if env is not None else os.environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


async def watchdog(interval: float) -> None:
    """Ping the watchdog from the event loop: a blocked loop stops the pings and trips it."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)

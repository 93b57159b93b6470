"""The machine under the fan-out benchmark: its cores, processes and sockets as /proc shows them."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import benchlib

# Every server listens on the loopback interface only.
HOST = "127.0.0.1"
SERVER_CPUS, CLIENT_CPUS = benchlib.SERVER_CPUS, benchlib.CLIENT_CPUS

# The entry point re-invokes itself (``--worker``, ``--publisher``) for the client processes,
# and the ceiling server runs from its own file, so neither depends on the working directory.
SCRIPT = Path(__file__).resolve().parents[1] / "bench_fanout.py"
CEILING = Path(__file__).resolve().with_name("ceiling.py")


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def core_times(cpus: set[int] | None) -> tuple[int, int]:
    """Busy and total jiffies of these cores (all of them for None), from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        ticks = [int(f) for f in fields[:8]]
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    return busy, total


def tcp_queue(ports: tuple[int, int], which: str) -> int:
    """The "tx" or "rx" queue, in bytes, of a loopback TCP socket; -1 when it is not there.

    ``ports`` are the socket's (local, remote) ports; the figure is from /proc/net/tcp.
    """
    local, remote = (f"0100007F:{port:04X}" for port in ports)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            tx, rx = fields[4].split(":")
            return int(tx if which == "tx" else rx, 16)
    return -1


def rss_mib(pid: int) -> float:
    """The resident set size of a process (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def kill(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_aiosvc_pinned(work: Path, port: int) -> subprocess.Popen[bytes]:
    """``benchlib.start_aiosvc`` with the server on the servers' core (it does not pin).

    The child inherits this process's affinity, so it is set around the start, and every thread
    the server starts inherits it too.
    """
    before = os.sched_getaffinity(0)
    benchlib.pin(benchlib.SERVER_CPUS)
    try:
        return benchlib.start_aiosvc(work, port)
    finally:
        os.sched_setaffinity(0, before)

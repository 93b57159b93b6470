"""Shared pieces of the benchmarks: start servers, run wrk, summarise figures."""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

WRK = shutil.which("wrk")


# With two or more cores, servers run on core 0 and the load generator on core 1, so the two
# do not take turns on one core (which makes figures swing with the scheduler).
PINNED = len(os.sched_getaffinity(0)) >= 2
SERVER_CPUS, CLIENT_CPUS = ({0}, {1}) if PINNED else (None, None)


def pin(cpus: set[int] | None) -> None:
    """Restrict the calling process to ``cpus`` (for ``preexec_fn``)."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def server_process(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a server process on the servers' core."""
    process: subprocess.Popen[bytes] = subprocess.Popen(
        argv, preexec_fn=lambda: pin(SERVER_CPUS), **kwargs
    )
    return process


def client_process(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a client process on the load generator's core."""
    process: subprocess.Popen[bytes] = subprocess.Popen(
        argv, preexec_fn=lambda: pin(CLIENT_CPUS), **kwargs
    )
    return process


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def require_wrk() -> str:
    """Return wrk's path, or exit explaining how to get it."""
    if WRK is None:
        sys.exit("this benchmark needs wrk as the load generator: apt-get install wrk")
    return WRK


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


#: Benchmarks measure throughput: the per-client write rate limit must not be what they hit.
BENCH_CONFIG = "[limits]\nwrite_rate_per_s = 1000000.0\nwrite_burst = 1000000\n"


def start_aiosvc(workdir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """Start ``aiosvc serve`` (on the servers' core) on a fresh database in ``workdir``, with
    :data:`BENCH_CONFIG`; logs go to a file there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOSVC_")}
    env["AIOSVC_LOG_FORMAT"] = "json"
    log = (workdir / f"aiosvc-{port}.log").open("ab")
    config = workdir / "bench.toml"
    config.write_text(BENCH_CONFIG)
    process = server_process(
        [
            sys.executable,
            "-m",
            "aiosvc",
            "serve",
            "--port",
            str(port),
            "--db",
            str(workdir / "bench.db"),
            "--config",
            str(config),
            *extra,
        ],
        stdout=log,
        stderr=log,
        env=env,
    )
    wait_until_up(f"http://127.0.0.1:{port}/health")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait."""
    process.terminate()
    process.wait(timeout=60)


def wrk(
    url: str, *, seconds: float, connections: int, script: Path | None = None
) -> dict[str, float]:
    """Run wrk once; return requests/s and the count of non-2xx answers."""
    argv = [require_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run(
        [*argv, url],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: pin(CLIENT_CPUS),
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": rps,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def workdir() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for databases and logs."""
    return tempfile.TemporaryDirectory(prefix="aiosvc-bench-")

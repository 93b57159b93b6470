#!/usr/bin/env python3
"""History benchmark: a daemon on 10,000 sessions, one of them 100,000 messages long.

It builds the database with direct inserts in the schema's format (after ``aiosvc migrate``),
starts ``aiosvc serve`` on it and prints, with its targets:

- startup time (to the first ``/health`` answer) and RSS after start and after the reads;
- the server time (the request log line's ``duration_ms``) of the first page of sessions
  and of the long history, and of their last page by cursor and by deep offset: the first
  read of each (from the database), then the median of five more (a history page is then
  one the cache kept);
- the worst ``/health`` latency, seen by a process of its own polling it every 5 ms, while
  the long history is read cold, by cursor 500 at a time as an agent would, and at deep
  offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

NOW = "2026-12-01T10:00:00.000Z"
BIG = "ses_big"


def build(db: Path, sessions: int, messages: int) -> float:
    """Make the database; return the seconds it took."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "aiosvc", "migrate", "--db", str(db)],
        check=True,
        capture_output=True,
    )
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "INSERT INTO sessions (id, title, agent, project, computer, status, created_at, "
            "updated_at, message_count, last_message_at) "
            "VALUES (?, 'the long one', 'echo', 'big', 'here', 'idle', ?, ?, ?, ?)",
            [BIG, NOW, NOW, messages, NOW],
        )
        conn.executemany(
            "INSERT INTO sessions (id, title, agent, project, computer, status, created_at, "
            "updated_at, message_count) VALUES (?, ?, 'echo', ?, 'here', ?, ?, ?, 0)",
            [
                (
                    f"ses_{n:06d}",
                    f"session {n}",
                    f"p{n % 10}",
                    "ended" if n % 3 else "idle",
                    NOW,
                    NOW,
                )
                for n in range(sessions - 1)
            ],
        )
        text = " lorem ipsum dolor sit amet" * 8
        conn.executemany(
            "INSERT INTO messages (id, session_id, role, content, status, created_at, "
            "completed_at) VALUES (?, ?, ?, ?, 'complete', ?, ?)",
            (
                (message_id(n), BIG, "user" if n % 2 == 0 else "assistant", f"{n}{text}", NOW, NOW)
                for n in range(messages)
            ),
        )
    conn.close()
    return time.monotonic() - started


def message_id(n: int) -> str:
    """The id of the long history's ``n``-th message."""
    return f"msg_{n:08d}"


def rss_mb(pid: int) -> float:
    """A process's resident set size, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(work: Path, port: int) -> tuple[subprocess.Popen[bytes], float, Path]:
    """Start ``aiosvc serve`` on the built database; the process, seconds to ``/health``
    answering, and its log file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOSVC_")}
    env["AIOSVC_LOG_FORMAT"] = "json"
    log_path = work / "aiosvc.log"
    config = work / "bench.toml"
    config.write_text(benchlib.BENCH_CONFIG)
    argv = [sys.executable, "-m", "aiosvc", "serve", "--port", str(port)]
    argv += ["--db", str(work / "bench.db"), "--config", str(config)]
    started = time.monotonic()
    with log_path.open("ab") as log:
        process = benchlib.server_process(argv, stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{port}/health"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return process, time.monotonic() - started, log_path
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(log_path.read_text()) from None
            time.sleep(0.005)


class Client:
    """Requests with ids, and their server times read back from the daemon's log."""

    def __init__(self, http: aiohttp.ClientSession, url: str, log: Path) -> None:
        self.http = http
        self.url = url
        self.log = log
        self.count = 0

    async def get(self, path: str) -> tuple[str, dict[str, Any]]:
        """GET ``path``; its request id and JSON body (which must be a 200)."""
        self.count += 1
        request_id = f"bench-{self.count}"
        headers = {"X-Request-ID": request_id}
        async with self.http.get(self.url + path, headers=headers) as response:
            body = await response.json()
            assert response.status == 200, (path, body)
        return request_id, body

    async def server_ms(self, request_ids: list[str]) -> list[float]:
        """The ``duration_ms`` of these requests' log lines, in order."""
        await asyncio.sleep(0.3)  # request lines are written at the end of a loop's turn
        found: dict[str, float] = {}
        for line in self.log.read_text().splitlines():
            if '"request_id":"bench-' in line:
                record = json.loads(line)
                if record.get("event") == "request":
                    found[record["request_id"]] = record["duration_ms"]
        return [found[i] for i in request_ids]

    async def timed(self, path: str, repeats: int) -> tuple[float, float, dict[str, Any]]:
        """Server ms of the first GET of ``path`` and the median of ``repeats`` more."""
        ids = []
        body: dict[str, Any] = {}
        for _ in range(1 + repeats):
            request_id, body = await self.get(path)
            ids.append(request_id)
        times = await self.server_ms(ids)
        return times[0], statistics.median(times[1:]), body


#: Polls ``/health`` every 5 ms over one keep-alive connection until its stdin closes, then
#: prints the latencies (ms) as JSON: a process of its own, so that what the benchmark's own
#: client does (parsing pages of 500 messages) never delays a poll.
POLLER = """
import http.client, json, sys, threading, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
latencies = []
while not stop.is_set():
    started = time.perf_counter()
    conn.request("GET", "/health")
    conn.getresponse().read()
    latencies.append((time.perf_counter() - started) * 1000)
    time.sleep(0.005)
print(json.dumps(latencies))
"""


async def health_while(port: int, work: Awaitable[None]) -> tuple[float, float, int]:
    """Poll ``/health`` every 5 ms from another process while ``work`` runs: the worst and
    the p99 latency (ms), and how many polls."""
    poller = benchlib.client_process(
        [sys.executable, "-c", POLLER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        await asyncio.sleep(0.2)
        await work
    finally:
        out, _ = poller.communicate(b"", timeout=30)
    latencies = sorted(json.loads(out))
    return latencies[-1], latencies[int(len(latencies) * 0.99)], len(latencies)


async def bench(args: argparse.Namespace) -> int:
    """Build, start, measure, print; 0 when every target holds."""
    results: list[tuple[str, float, float, str]] = []  # figure, value, target, unit

    with tempfile.TemporaryDirectory(prefix="aiosvc-bench-") as tmp:
        work = Path(tmp)
        built = build(work / "bench.db", args.sessions, args.messages)
        size = (work / "bench.db").stat().st_size / 1e6
        print(
            f"database: {args.sessions:,} sessions, one of {args.messages:,} messages, "
            f"{size:.0f} MB, built in {built:.1f} s"
        )
        port = benchlib.free_port()
        process, startup_s, log = start(work, port)
        try:
            results.append(("startup (to /health)", startup_s * 1000, 2000, "ms"))
            results.append(("RSS after start", rss_mb(process.pid), 150, "MB"))
            n = args.messages
            async with aiohttp.ClientSession() as http:
                client = Client(http, f"http://127.0.0.1:{port}", log)
                base = f"/api/v1/sessions/{BIG}/messages"
                pages = [
                    ("first page of sessions (cached body)", "/api/v1/sessions", 10),
                    ("first page of sessions (?limit=50)", "/api/v1/sessions?limit=50", 10),
                    ("sessions filtered (?status=idle)", "/api/v1/sessions?status=idle", 10),
                    ("first page of the long history", base, 10),
                    ("its last page by cursor", f"{base}?after={message_id(n - 51)}", 20),
                    ("its last page by deep offset", f"{base}?offset={n - 50}", 20),
                    ("sessions' last page by cursor", "/api/v1/sessions?after=ses_000049", 20),
                    (
                        "sessions' last page by deep offset",
                        f"/api/v1/sessions?offset={args.sessions - 50}",
                        20,
                    ),
                ]
                for name, path, within_ms in pages:
                    first, median, body = await client.timed(path, args.repeats)
                    assert len(body["data"]) == 50, (path, len(body["data"]))
                    results.append((f"{name}: first read", first, within_ms, "ms"))
                    results.append((f"{name}: again (median)", median, within_ms, "ms"))

                async def by_cursor() -> None:
                    """The whole history by cursor, 500 at a time, as an agent reads it."""
                    query = "?limit=500"
                    while query:
                        _, body = await client.get(base + query)
                        query = f"?limit=500&after={body['next']}" if body["next"] else ""

                async def by_offset() -> None:
                    """Pages of 500 at 20 offsets across the history."""
                    for offset in range(0, n, n // 20):
                        await client.get(f"{base}?limit=500&offset={offset + 1}")

                for name, reads in (("by cursor", by_cursor()), ("by offsets", by_offset())):
                    worst, p99, polls = await health_while(port, reads)
                    results.append(
                        (
                            f"/health worst, history read cold {name} ({polls} polls)",
                            worst,
                            20,
                            "ms",
                        )
                    )
                    results.append(("/health p99 meanwhile", p99, 20, "ms"))
            results.append(("RSS after the reads", rss_mb(process.pid), 150, "MB"))
        finally:
            benchlib.stop(process)
    ok = True
    for name, value, target, unit in results:
        met = value < target
        ok &= met
        missed = "" if met else "  MISSED"
        print(f"  {name:58s} {value:8.1f} {unit:2s}  (target < {target:g} {unit}){missed}")
    return 0 if ok else 1


def main() -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5, help="reads of each page after the first")
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

"""Soak: a steady, moderate mix of everything clients do, against a real ``aiosvc serve``, with
its memory (RSS) sampled as it runs. A daemon left running for months must hold it flat.

The mix (about 100 requests a second): sessions created, talked to and ended; 20 messages a
second, each answered by the echo agent; 20 hook events a second; readers of session lists,
sessions and history pages; WebSocket and SSE clients that disconnect and resume every few
seconds. After the warm-up, the script prints the RSS samples, their least-squares slope in
MB/min (target: |slope| < 0.5) and their spread around the mean (target: within 10 %).

    scripts/soak.py --minutes 20 --warmup 5          # the full run
    scripts/soak.py --minutes 2 --warmup 0.5 --sample 5   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import benchlib

#: Hook bodies carry about this much data, like a coding agent's tool report.
HOOK_DATA = "x" * 1000


def rss_mb(pid: int) -> float:
    """The resident set size of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Mix:
    """The clients of the soak, sharing one HTTP session and the ids they learn."""

    def __init__(self, http: aiohttp.ClientSession, url: str, stop_at: float) -> None:
        self.http = http
        self.url = url
        self.stop_at = stop_at
        self.live: list[str] = []  # sessions still taking messages
        self.ended: list[str] = []  # sessions kept for readers
        self.counts: Counter[str] = Counter()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; counts its status; the ``data`` of a JSON answer, or None."""
        try:
            async with self.http.request(method, self.url + path, **kwargs) as response:
                self.counts[f"{method} {response.status}"] += 1
                if response.content_type == "application/json":
                    return (await response.json()).get("data")
        except aiohttp.ClientError:
            self.counts["client_error"] += 1
        return None

    async def every(self, per_s: float, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` ``per_s`` times a second until the end, never more than one at once
        per loop (a slow daemon lowers the rate instead of piling up requests)."""
        period = 1 / per_s
        next_at = time.monotonic()
        while time.monotonic() < self.stop_at:
            await action()
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def create_session(self) -> None:
        """A new session; the oldest live one is ended once ten are live."""
        session = await self.call("POST", "/api/v1/sessions", json={"title": "soak"})
        if session is not None:
            self.live.append(session["id"])
        if len(self.live) > 10:
            old = self.live.pop(0)
            await self.call("POST", f"/api/v1/sessions/{old}/end")
            self.ended.append(old)
        if len(self.ended) > 200:  # old sessions go, as people clean up
            await self.call("DELETE", f"/api/v1/sessions/{self.ended.pop(0)}")

    async def send_message(self) -> None:
        """A message of a few hundred characters to a live session."""
        if self.live:
            body = {"content": "soak " + "word " * random.randint(10, 100)}
            await self.call(
                "POST", f"/api/v1/sessions/{random.choice(self.live)}/messages", json=body
            )

    async def post_hook(self) -> None:
        """A hook event, half of them about a session."""
        body: dict[str, Any] = {"type": "tool_report", "data": {"text": HOOK_DATA}}
        if self.live and random.random() < 0.5:
            body["session_id"] = random.choice(self.live)
        await self.call("POST", "/api/v1/hooks", json=body)

    async def read(self) -> None:
        """What a dashboard reads: the list, a session, a history page."""
        known = self.live + self.ended
        choice = random.random()
        if choice < 0.3 or not known:
            await self.call("GET", "/api/v1/sessions")
        elif choice < 0.5:
            await self.call("GET", f"/api/v1/sessions/{random.choice(known)}")
        else:
            await self.call("GET", f"/api/v1/sessions/{random.choice(known)}/messages")

    async def websocket_client(self) -> None:
        """Subscribe, listen a few seconds, drop, resume from the last id seen."""
        last_id: int | None = None
        while time.monotonic() < self.stop_at:
            try:
                async with self.http.ws_connect(self.url + "/api/v1/ws") as ws:
                    topics = ["sessions", "hooks"]
                    if self.live:
                        topics.append(f"session:{random.choice(self.live)}")
                    await ws.send_json({"op": "subscribe", "topics": topics, "since": last_id})
                    until = time.monotonic() + random.uniform(3, 10)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, until - time.monotonic())):
                            async for message in ws:
                                frame = message.json()
                                if frame.get("type") == "event":
                                    last_id = frame["event"]["id"]
                                    self.counts["ws_events"] += 1
                                elif frame.get("type") == "reset":
                                    last_id = frame.get("last_event_id")
                self.counts["ws_sessions"] += 1
            except aiohttp.ClientError:
                self.counts["client_error"] += 1
                await asyncio.sleep(1)

    async def sse_client(self) -> None:
        """Stream all events a few seconds, drop, resume with Last-Event-ID."""
        last_id: str | None = None
        while time.monotonic() < self.stop_at:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                async with self.http.get(self.url + "/api/v1/events", headers=headers) as resp:
                    until = time.monotonic() + random.uniform(3, 10)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, until - time.monotonic())):
                            async for line in resp.content:
                                if line.startswith(b"id: "):
                                    last_id = line[4:].strip().decode()
                                    self.counts["sse_events"] += 1
                self.counts["sse_sessions"] += 1
            except aiohttp.ClientError:
                self.counts["client_error"] += 1
                await asyncio.sleep(1)


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, MB) samples, in MB per minute."""
    if len(samples) < 2:
        return 0.0
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    return statistics.linear_regression(times, values).slope * 60


async def sample(pid: int, every_s: float, stop_at: float, into: list[tuple[float, float]]) -> None:
    """Record (seconds since start, RSS MB) every ``every_s`` until the end."""
    start = time.monotonic()
    while True:
        now = time.monotonic()
        into.append((now - start, rss_mb(pid)))
        print(f"  {now - start:7.0f} s  RSS {into[-1][1]:7.1f} MB", flush=True)
        if now + every_s > stop_at:
            return
        await asyncio.sleep(every_s)


async def soak(args: argparse.Namespace) -> int:
    """Run the mix against a fresh daemon; print the figures; 0 when both targets hold."""
    with tempfile.TemporaryDirectory(prefix="aiosvc-soak-") as work:
        port = benchlib.free_port()
        process = benchlib.start_aiosvc(Path(work), port)
        url = f"http://127.0.0.1:{port}"
        seconds = args.minutes * 60
        stop_at = time.monotonic() + seconds
        samples: list[tuple[float, float]] = []
        print(f"soak: {args.minutes:g} min against pid {process.pid}, RSS every {args.sample:g} s")
        try:
            connector = aiohttp.TCPConnector(limit=200)
            async with aiohttp.ClientSession(url, connector=connector) as http:
                mix = Mix(http, "", stop_at)
                loops = [
                    mix.every(2, mix.create_session),
                    mix.every(20, mix.send_message),
                    mix.every(20, mix.post_hook),
                    *(mix.every(10, mix.read) for _ in range(5)),
                    *(mix.websocket_client() for _ in range(5)),
                    *(mix.sse_client() for _ in range(5)),
                    sample(process.pid, args.sample, stop_at, samples),
                ]
                await asyncio.gather(*loops)
        finally:
            benchlib.stop(process)
    return report(samples, args.warmup * 60, mix.counts, seconds)


def report(
    samples: list[tuple[float, float]], warmup_s: float, counts: Counter[str], seconds: float
) -> int:
    """Print the figures after the warm-up; 0 when slope and spread are within target."""
    requests = sum(n for key, n in counts.items() if key.split()[0] in ("GET", "POST", "DELETE"))
    print(
        f"requests: {requests} ({requests / seconds:.0f}/s); "
        + ", ".join(f"{key} {n}" for key, n in sorted(counts.items()))
    )
    steady = [(t, mb) for t, mb in samples if t >= warmup_s]
    if len(steady) < 2:
        print("not enough samples after the warm-up")
        return 1
    values = [mb for _, mb in steady]
    mean = statistics.fmean(values)
    spread = max(abs(v - mean) for v in values) / mean
    slope = slope_mb_per_min(steady)
    print(
        f"after {warmup_s / 60:g} min warm-up: RSS {min(values):.1f} to {max(values):.1f} MB "
        f"(mean {mean:.1f}, spread {spread:.1%}, target <= 10 %); "
        f"slope {slope:+.2f} MB/min (target |slope| < 0.5)"
    )
    return 0 if spread <= 0.10 and abs(slope) < 0.5 else 1


def main() -> int:
    """Parse the arguments and run the soak."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the run")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes before judging")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Relay benchmark: what relaying a peer's events through a local daemon adds to their
delivery.

A peer daemon and a local daemon peered with it (servers on the servers' core); in this process
(on the other core) one SSE subscriber to a session of the peer's directly on the peer and one
through the local daemon (``GET /api/v1/sessions/{id}/events``, which makes the local daemon
hold a relay from the peer). Hook events about that session are posted to the peer at a fixed
rate; each one's arrival through the relay is compared with its arrival on the direct stream
(the same process, the same clock). Reported: the added latency's p50 and p99 (target: p99
under 5 ms), and events lost or duplicated on the relayed stream (must be zero).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib


async def subscribe(
    http: aiohttp.ClientSession, url: str, arrivals: dict[int, list[float]], ready: asyncio.Event
) -> None:
    """Read an SSE stream, noting when each hook event (by its ``seq``) arrived."""
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
        assert response.status == 200, response.status
        ready.set()
        data = None
        while line := await response.content.readline():
            text = line.decode().rstrip("\n")
            if text.startswith("data: "):
                data = text[6:]
            elif not text and data is not None:
                body = json.loads(data)
                seq = body.get("data", {}).get("data", {}).get("seq")
                if isinstance(seq, int):
                    arrivals.setdefault(seq, []).append(time.perf_counter())
                data = None


async def held_streams(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(base + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith('aiosvc_streams_open{transport="sse"}'):
                return float(line.split()[-1])
    return 0.0


async def run(args: argparse.Namespace, peer: str, local: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(peer + "/api/v1/sessions", json={}) as response:
            session_id = (await response.json())["data"]["id"]
        async with http.get(local + "/api/v1/sessions") as response:
            assert (await response.json())["total"] == 1  # the local daemon knows the session
        direct: dict[int, list[float]] = {}
        relayed: dict[int, list[float]] = {}
        ready = [asyncio.Event(), asyncio.Event()]
        tasks = [
            asyncio.create_task(
                subscribe(
                    http, f"{peer}/api/v1/events?topics=session:{session_id}", direct, ready[0]
                )
            ),
            asyncio.create_task(
                subscribe(http, f"{local}/api/v1/sessions/{session_id}/events", relayed, ready[1])
            ),
        ]
        await asyncio.gather(*(r.wait() for r in ready))
        while await held_streams(http, peer) < 2:  # ours and the relay's  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        interval = 1 / args.rate
        started = time.perf_counter()
        for seq in range(args.events):
            body = {"type": "bench", "session_id": session_id, "data": {"seq": seq}}
            async with http.post(peer + "/api/v1/hooks", json=body) as response:
                assert response.status in (200, 201, 202), response.status
            delay = started + (seq + 1) * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        added = [
            (relayed[s][0] - direct[s][0]) * 1000
            for s in range(args.events)
            if s in relayed and s in direct
        ]
        lost = sum(1 for s in range(args.events) if s not in relayed)
        doubled = sum(1 for s in relayed if len(relayed[s]) > 1)
        cuts = statistics.quantiles(added, n=100)
        print(
            f"relay of {args.events:,} hook events at {args.rate}/s: added latency p50 "
            f"{statistics.median(added):.2f} ms, p99 {cuts[98]:.2f} ms (target < 5 ms); "
            f"lost {lost}, duplicated {doubled}"
        )


def main() -> None:
    """Start the two daemons, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=200, help="events per second")
    args = parser.parse_args()
    benchlib.pin(benchlib.CLIENT_CPUS)
    os.environ.pop("AIOSVC_API_KEYS", None)
    with benchlib.workdir() as tmp:
        work = Path(tmp)
        (work / "peer").mkdir()
        (work / "local").mkdir()
        ports = benchlib.free_port(), benchlib.free_port()
        servers = [benchlib.start_aiosvc(work / "peer", ports[0])]
        try:
            config = work / "local" / "peers.toml"
            config.write_text(
                benchlib.BENCH_CONFIG + f'\n[peers.p]\nurl = "http://127.0.0.1:{ports[0]}"\n'
            )
            servers.append(benchlib.start_aiosvc(work / "local", ports[1], "--config", str(config)))
            asyncio.run(run(args, *(f"http://127.0.0.1:{p}" for p in ports)))
        finally:
            for server in servers:
                benchlib.stop(server)


if __name__ == "__main__":
    main()

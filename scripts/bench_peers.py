#!/usr/bin/env python3
"""Peers benchmark: a session list merged with two peers' against a local-only list.

Two peer daemons with ``--sessions`` sessions each (1,000 by default), a daemon peered with
both, and one with no peers; each local daemon has 20 sessions of its own. ``GET
/api/v1/sessions`` is loaded with wrk on the merged and on the local-only daemon in
alternating rounds, and the ratio of their medians printed (target: at least 0.5). The merged
list is answered from the peers' kept lists (fetched once, then behind reads every 30 s).

The load comes from wrk in its own process (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib


def create(base: str, n: int) -> None:
    """Create ``n`` sessions on the daemon at ``base`` (a few requests at a time)."""

    def one(i: int) -> None:
        request = urllib.request.Request(
            f"{base}/api/v1/sessions",
            data=json.dumps({"title": f"s{i}"}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def total(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        found: int = json.loads(response.read())["total"]
        return found


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000, help="sessions on each peer")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    benchlib.require_wrk()
    with benchlib.workdir() as tmp:
        work = Path(tmp)
        dirs = {name: work / name for name in ("a", "b", "alone", "merged")}
        ports = {name: benchlib.free_port() for name in dirs}
        for path in dirs.values():
            path.mkdir()
        servers = []
        try:
            for name in ("a", "b", "alone"):
                servers.append(benchlib.start_aiosvc(dirs[name], ports[name]))
            config = dirs["merged"] / "peers.toml"
            config.write_text(
                benchlib.BENCH_CONFIG
                + "".join(
                    f'\n[peers.{p}]\nurl = "http://127.0.0.1:{ports[p]}"\n' for p in ("a", "b")
                )
            )
            servers.append(
                benchlib.start_aiosvc(dirs["merged"], ports["merged"], "--config", str(config))
            )
            url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            create(url["a"], args.sessions)
            create(url["b"], args.sessions)
            create(url["alone"], 20)
            create(url["merged"], 20)
            merged_total = total(url["merged"] + "/api/v1/sessions")
            assert merged_total == 2 * args.sessions + 20, merged_total
            rates: dict[str, list[float]] = {"merged": [], "alone": []}
            for _ in range(args.rounds):
                for name in ("merged", "alone"):
                    result = benchlib.wrk(
                        url[name] + "/api/v1/sessions",
                        seconds=args.seconds,
                        connections=args.connections,
                    )
                    assert result["non_2xx"] == 0, result
                    rates[name].append(result["rps"])
            merged, alone = benchlib.median(rates["merged"]), benchlib.median(rates["alone"])
            ratio = benchlib.median(
                [m / a for m, a in zip(rates["merged"], rates["alone"], strict=True)]
            )
            print(
                f"GET /api/v1/sessions merged with 2 peers of {args.sessions:,} sessions "
                f"({merged_total:,} listed): {merged:,.0f} req/s; local only (20 sessions): "
                f"{alone:,.0f} req/s; ratio {ratio:.2f} (median of {args.rounds} paired "
                "rounds; target >= 0.50)"
            )
            # a page deep in the merge (the heap walks every computer's list up to it)
            deep = f"/api/v1/sessions?limit=50&offset={args.sessions}"
            result = benchlib.wrk(url["merged"] + deep, seconds=args.seconds, connections=8)
            print(f"  offset {args.sessions:,} of the merged list: {result['rps']:,.0f} req/s")
        finally:
            for server in servers:
                benchlib.stop(server)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""HTTP benchmark: aiosvc's session list against a bare aiohttp handler, and durable sends.

1. ``GET /api/v1/sessions`` (20 sessions, every middleware on) against a minimal aiohttp app
   that returns the very same JSON bytes, in alternating rounds on one machine, and the ratio
   of their medians (target: at least 0.7).
2. ``POST /api/v1/sessions/{id}/messages`` with the echo agent at zero delay: acknowledged
   messages per second (each stored durably before its 202; target: at least 1,000), and how
   long the replies took to finish after the load stopped.

The load comes from wrk in its own process (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

BARE_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
async def handler(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/api/v1/sessions", handler)
app.router.add_get("/health", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

POST_SCRIPT = """
local ids = {%s}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"content": "hello from the benchmark"}'
request = function()
  n = n + 1
  return wrk.format(nil, "/api/v1/sessions/" .. ids[(n %% #ids) + 1] .. "/messages")
end
"""


def call(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    """One JSON request with the standard library."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def main() -> None:
    """Run both benchmarks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of each")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    benchlib.require_wrk()
    with benchlib.workdir() as tmp:
        work = Path(tmp)
        port, bare_port = benchlib.free_port(), benchlib.free_port()
        server = benchlib.start_aiosvc(work, port)
        base = f"http://127.0.0.1:{port}/api/v1"
        ids = [str(call(f"{base}/sessions", {"title": f"s{n}"})["data"]["id"]) for n in range(20)]  # type: ignore[index]
        with urllib.request.urlopen(f"{base}/sessions") as response:
            (work / "body.json").write_bytes(response.read())
        bare = benchlib.server_process(
            [sys.executable, "-c", BARE_SERVER, str(bare_port), str(work / "body.json")]
        )
        try:
            benchlib.wait_until_up(f"http://127.0.0.1:{bare_port}/health")
            ours: list[float] = []
            theirs: list[float] = []
            cpu: dict[int, list[float]] = {port: [], bare_port: []}
            for _ in range(args.rounds):
                for target, pid, figures in (
                    (port, server.pid, ours),
                    (bare_port, bare.pid, theirs),
                ):
                    before = benchlib.cpu_seconds(pid)
                    result = benchlib.wrk(
                        f"http://127.0.0.1:{target}/api/v1/sessions",
                        seconds=args.seconds,
                        connections=args.connections,
                    )
                    used = benchlib.cpu_seconds(pid) - before
                    assert result["non_2xx"] == 0, result
                    figures.append(result["rps"])
                    cpu[target].append(used / result["requests"] * 1e6)
            a, b = benchlib.median(ours), benchlib.median(theirs)
            ratio = benchlib.median([x / y for x, y in zip(ours, theirs, strict=True)])
            print(
                f"GET /api/v1/sessions (20 sessions): aiosvc {a:,.0f} req/s, bare aiohttp "
                f"{b:,.0f} req/s, ratio {ratio:.2f} (median of {args.rounds} paired rounds; "
                "target >= 0.70)"
            )
            mine, bare_cpu = benchlib.median(cpu[port]), benchlib.median(cpu[bare_port])
            print(
                f"  server CPU per request: aiosvc {mine:.0f} us, bare {bare_cpu:.0f} us "
                f"(ratio {bare_cpu / mine:.2f})"
            )
        finally:
            benchlib.stop(bare)

        script = work / "post.lua"
        script.write_text(POST_SCRIPT % ", ".join(f'"{i}"' for i in ids))
        started = time.monotonic()
        result = benchlib.wrk(
            f"http://127.0.0.1:{port}/",
            seconds=args.seconds,
            connections=args.connections,
            script=script,
        )
        load_end = time.monotonic()
        while any(call(f"{base}/sessions/{i}")["data"]["status"] != "idle" for i in ids):  # type: ignore[index]
            time.sleep(0.05)
        drained = time.monotonic()
        accepted = result["requests"] - result["non_2xx"]
        print(
            f"POST messages (echo, durable before 202): {result['rps']:,.0f} msg/s accepted, "
            f"p99 {result['p99_ms']:.1f} ms, {result['non_2xx']:.0f} refused (target >= 1,000)"
        )
        print(
            f"  replies: {accepted:,.0f} finished {drained - load_end:.2f} s after the load "
            f"stopped; {accepted / (drained - started):,.0f} messages/s end to end"
        )
        benchlib.stop(server)


if __name__ == "__main__":
    main()

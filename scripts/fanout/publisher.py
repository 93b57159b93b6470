"""The publisher process: posts the hooks, stamps each with time.time() and a sequence number."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

import benchlib
import orjson

from fanout.system import CLIENT_CPUS, HOST, SERVER_CPUS, core_times


class Publisher:
    """Posts hooks over keep-alive HTTP/1.1 connections (raw asyncio streams)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect(self, count: int) -> None:
        """Have ``count`` connections open."""
        while len(self.connections) < count:
            self.connections.append(await asyncio.open_connection(HOST, self.port))

    async def post(self, index: int, run: int, seq: int, pad: str) -> bool:
        """Post one hook on connection ``index``; True when the server answered 202."""
        reader, writer = self.connections[index]
        data = {"run": run, "seq": seq, "t": time.time(), "pad": pad}
        body = orjson.dumps({"type": "bench", "data": data})
        writer.write(
            b"POST /api/v1/hooks HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (HOST.encode(), self.port, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if match is None:
            raise RuntimeError(f"answer without Content-Length: {head!r}")
        await reader.readexactly(int(match.group(1)))
        return head.startswith(b"HTTP/1.1 202")

    def close(self) -> None:
        """Close every connection."""
        for _, writer in self.connections:
            writer.close()
        self.connections = []


async def publisher_main(spec: dict[str, Any]) -> None:
    """Publish one phase; print a start line (the first send time), then the outcome."""
    port, run, mode, pad = spec["port"], spec["run"], spec["mode"], "x" * spec["pad"]
    rate, seconds, window = spec["rate"], spec["seconds"], spec["window"]
    publisher = Publisher(port)
    await publisher.connect(window if mode == "max" else 1)
    loop = asyncio.get_running_loop()
    ok: list[int] = []
    failed = 0
    server_cpu, own_cpu = benchlib.cpu_seconds(spec["server_pid"]), time.process_time()
    server_core, client_core = core_times(SERVER_CPUS), core_times(CLIENT_CPUS)
    first_send = time.time()
    sys.stdout.write(json.dumps({"first_send": first_send}) + "\n")
    sys.stdout.flush()
    start = loop.time()
    if mode == "fixed":
        for seq in range(max(1, round(rate * seconds))):
            delay = start + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if await publisher.post(0, run, seq, pad):
                ok.append(seq)
            else:
                failed += 1
    else:
        counter = iter(range(1 << 30))

        async def post_loop(index: int) -> None:
            """Post on connection ``index``, one post in flight, until the phase ends."""
            nonlocal failed
            while loop.time() < start + seconds:
                seq = next(counter)
                if await publisher.post(index, run, seq, pad):
                    ok.append(seq)
                else:
                    failed += 1

        await asyncio.gather(*(post_loop(i) for i in range(window)))
    publish_end = time.time()
    wall = publish_end - first_send
    busy, total = core_times(CLIENT_CPUS)
    server_busy, server_total = core_times(SERVER_CPUS)
    publisher.close()
    outcome = {
        "ok": ok,
        "failed": failed,
        "publish_end": publish_end,
        "server_cpu": (benchlib.cpu_seconds(spec["server_pid"]) - server_cpu) / wall,
        "publisher_cpu": (time.process_time() - own_cpu) / wall,
        "server_core": (server_busy - server_core[0]) / max(server_total - server_core[1], 1),
        "client_core": (busy - client_core[0]) / max(total - client_core[1], 1),
    }
    sys.stdout.write(json.dumps(outcome) + "\n")
    sys.stdout.flush()

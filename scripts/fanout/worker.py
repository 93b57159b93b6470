"""The client process, both ends: its command loop and the orchestrator's handle on it.

The client process holds the subscribers and starts the publisher processes; the orchestrator
drives it with JSON lines on its stdin and stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import time
import traceback
from typing import Any

import benchlib

from fanout.group import Group
from fanout.system import CLIENT_CPUS, SCRIPT, kill, raise_nofile


async def worker_main(client: str) -> None:
    """Serve the orchestrator's commands, one JSON line each, on stdin/stdout."""
    raise_nofile()
    groups: dict[str, Group] = {}
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            op = command.pop("op")
            try:
                if op == "quit":
                    reply: dict[str, Any] = {}
                elif op == "connect":
                    group = Group(command["port"], command["pid"], client)
                    groups[command["name"]] = group
                    reply = await group.connect(command["ws"], command["sse"])
                elif op == "phase":
                    reply = await groups[command.pop("name")].phase(**command)
                elif op == "stall":
                    reply = await groups[command["name"]].add_stalled(command["rcvbuf"])
                elif op == "stall_report":
                    reply = await groups[command["name"]].stalled_report()
                elif op == "unstall":
                    reply = groups[command["name"]].drop_stalled()
                else:
                    raise ValueError(f"unknown op {op!r}")
            except Exception:
                reply = {"error": traceback.format_exc()}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            if op == "quit":
                return
    finally:
        for group in groups.values():
            await group.close()


class Worker:
    """The orchestrator's handle on the client process, driven by JSON lines on its stdio."""

    def __init__(self, client: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--worker", "--client", client],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            preexec_fn=lambda: benchlib.pin(CLIENT_CPUS),
        )
        self.buffer = b""

    def call(self, op: str, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
        """Run one command in the client process and return its answer."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        deadline = time.monotonic() + timeout
        out = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the client process did not answer {op!r} in {timeout} s")
            readable, _, _ = select.select([out], [], [], remaining)
            if readable:
                chunk = os.read(out, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"the client process exited during {op!r}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the client process failed {op!r}:\n{reply['error']}")
        return reply

    def stop(self) -> None:
        """Ask it to quit; kill it if it does not."""
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.call("quit", timeout=10)
        kill(self.process, grace=5)

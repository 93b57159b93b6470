#!/usr/bin/env python3
"""``aiosvc tui`` in a real terminal (tmux): how fast it starts, and how it answers the keyboard
while a reply streams 2,000 deltas per second.

1. Start time: ``aiosvc tui SESSION`` is started in a fresh tmux pane ``--starts`` times; each
   time is from the spawn to the first screen that shows the session open and connected (its
   status bar), read with ``capture-pane`` every few milliseconds. Target: under 1 s.
2. Responsiveness: a ``command`` agent prints ``--rate`` small chunks per second (each read
   from its pipe is one ``message.delta``) for ``--seconds``; a plain WebSocket client counts
   the deltas the daemon really sent. Meanwhile a key is typed into the TUI every 200 ms and
   the time until the pane shows it is the input latency (key to screen, through tmux).
   Reported: deltas/s, latency p50/p99/max, and the CPU the TUI took.
3. The same load without the daemon, so that a busy machine cannot hold the rate down: the
   application runs in this process (Textual's headless harness: everything but the writes to
   the terminal) and exactly ``--rate`` delta frames per second go through the feed's frame
   handler, JSON decoding included. Reported: the event loop's lag (how late a 5 ms timer
   fires), key latency (a key posted until the input line holds it), and CPU.

The daemon runs on CPU 0 and the TUI on CPU 1 when there are two cores (see benchlib).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

#: The flood agent: the prompt is how many chunks; argv[1] the chunks per second.
FLOOD = """
import sys, time
count = int(sys.stdin.read().split()[0]); rate = float(sys.argv[1])
due = time.perf_counter()
for i in range(count):
    sys.stdout.write(f"w{i}" + ("\\n" if i % 16 == 15 else " "))
    sys.stdout.flush()
    due += 1 / rate
    pause = due - time.perf_counter()
    if pause > 0:
        time.sleep(pause)
"""


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="start-time runs (5)")
    parser.add_argument("--rate", type=float, default=2000.0, help="deltas per second (2000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the flood (10)")
    return parser.parse_args()


def rest(url: str, method: str, path: str, body: Any = None) -> Any:
    """One REST call; its ``data``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


class Pane:
    """A tmux server of our own with one pane running the TUI."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        """One tmux command; its output."""
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, check=False
        )
        return done.stdout

    def start(self, argv: list[str]) -> None:
        """Run ``argv`` in a new 140x40 pane (on the client core when pinned)."""
        if benchlib.CLIENT_CPUS is not None:
            argv = ["taskset", "-c", ",".join(map(str, benchlib.CLIENT_CPUS)), *argv]
        self.tmux("new-session", "-d", "-s", "tui", "-x", "140", "-y", "40", shlex.join(argv))

    def screen(self) -> str:
        """The text on the screen."""
        return self.tmux("capture-pane", "-p", "-t", "tui")

    def pid(self) -> int:
        """The TUI's process id."""
        return int(self.tmux("display-message", "-p", "-t", "tui", "#{pane_pid}").strip())

    def kill(self) -> None:
        """End the tmux server."""
        self.tmux("kill-server")


def start_time(url: str, session_id: str, workdir: Path, run: int) -> tuple[float, float]:
    """Seconds from spawning the TUI to the screen showing the session, connected; and the
    CPU seconds the TUI had used by then (what a busy machine does not inflate)."""
    pane = Pane(workdir / f"start{run}.sock")
    began = time.perf_counter()
    pane.start([sys.executable, "-m", "aiosvc", "tui", "--url", url, session_id])
    try:
        deadline = began + 30
        while time.perf_counter() < deadline:
            screen = pane.screen()
            if "● connected" in screen and session_id in screen:
                return time.perf_counter() - began, benchlib.cpu_seconds(pane.pid())
            time.sleep(0.005)
        raise RuntimeError(f"the TUI did not come up:\n{pane.screen()}")
    finally:
        pane.kill()


async def count_deltas(url: str, session_id: str, done: asyncio.Event) -> list[float]:
    """The arrival times of the session's ``message.delta`` events, until its reply ends."""
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/api/v1/ws") as ws:
        await ws.receive_json()
        await ws.send_json({"op": "subscribe", "topics": [f"session:{session_id}"]})
        done.set()  # subscribed
        async for message in ws:
            frame = json.loads(message.data)
            event = frame.get("event") or {}
            if event.get("type") == "message.delta":
                arrivals.append(time.perf_counter())
            elif event.get("type") in ("message.completed", "message.failed"):
                return arrivals
    return arrivals


def shows(pane: Pane, typed: int) -> bool:
    """Tell whether the input line shows ``typed`` keys."""
    return typed_count(pane.screen()) >= typed


async def poll(check: Callable[[], bool], limit_s: float) -> None:
    """Check every 2 ms until ``check()`` is true or ``limit_s`` seconds have passed."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        if check():
            return
        await asyncio.sleep(0.002)


def typed_count(screen: str) -> int:
    """How many ``x`` the input line shows."""
    for line in screen.splitlines():
        if "▊" in line and "x" in line and "type a message" not in line:
            return line.count("x")
    return 0


async def responsiveness(
    url: str, session_id: str, workdir: Path, args: argparse.Namespace
) -> None:
    """Type while the flood streams; print the figures."""
    pane = Pane(workdir / "flood.sock")
    pane.start([sys.executable, "-m", "aiosvc", "tui", "--url", url, session_id])
    try:
        await poll(lambda: "● connected" in pane.screen(), 30.0)
        pid = pane.pid()
        subscribed = asyncio.Event()
        counter = asyncio.create_task(count_deltas(url, session_id, subscribed))
        await subscribed.wait()
        count = int(args.rate * args.seconds)
        cpu_before, wall_before = benchlib.cpu_seconds(pid), time.perf_counter()
        await asyncio.to_thread(
            rest, url, "POST", f"/api/v1/sessions/{session_id}/messages", {"content": str(count)}
        )
        latencies: list[float] = []
        typed = 0
        while not counter.done():
            await asyncio.sleep(0.2)
            pane.tmux("send-keys", "-t", "tui", "-l", "x")
            sent = time.perf_counter()
            typed += 1
            await poll(functools.partial(shows, pane, typed), 10.0)
            latencies.append(time.perf_counter() - sent)
            if typed % 60 == 0:  # keep the line short: clear it
                pane.tmux("send-keys", "-t", "tui", "C-u")
                typed = 0
                await asyncio.sleep(0.2)
        arrivals = await counter
        wall = time.perf_counter() - wall_before
        cpu = benchlib.cpu_seconds(pid) - cpu_before
    finally:
        pane.kill()
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"deltas sent by the daemon: {len(arrivals)} in {span:.2f} s = {len(arrivals) / span:.0f}/s"
    )
    print(
        f"input latency while streaming (key to screen, {len(ms)} keys): "
        f"p50 {statistics.median(ms):.0f} ms, p99 {p99:.0f} ms, max {ms[-1]:.0f} ms"
    )
    print(f"TUI CPU while streaming: {100 * cpu / wall:.0f} % of one core")


def grew(prompt: Any, before: int) -> bool:
    """Tell whether the input line holds more than ``before`` characters."""
    return len(prompt.value) > before


async def synthetic(rate: float, seconds: float) -> None:
    """Feed ``rate`` delta frames a second to the application in this process; print figures."""
    from textual import events

    from aiosvc.client.tui.app import TuiApp
    from aiosvc.client.tui.panels import PromptInput

    app = TuiApp(f"http://127.0.0.1:{benchlib.free_port()}", None)  # (nothing listens)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause(0.3)
        app.feed.session_id = "ses_bench"
        prompt = app.query_one(PromptInput)
        prompt.focus()
        lags: list[float] = []
        keys: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                due = time.perf_counter() + 0.005
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - due)

        async def typist() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.1)
                before = len(prompt.value)
                sent = time.perf_counter()
                app.post_message(events.Key("x", "x"))
                await poll(functools.partial(grew, prompt, before), 10.0)
                keys.append(time.perf_counter() - sent)
                if len(prompt.value) > 60:
                    prompt.value = ""

        tasks = [asyncio.create_task(probe()), asyncio.create_task(typist())]
        count = int(rate * seconds)
        cpu_before, began = time.process_time(), time.perf_counter()
        for number in range(count):
            delta = f"w{number}" + ("\n" if number % 16 == 15 else " ")
            event = {"id": number + 1, "type": "message.delta", "topic": "session:ses_bench"}
            event["data"] = {"message_id": "msg_bench", "delta": delta}
            await app.feed._on_frame(json.loads(json.dumps({"type": "event", "event": event})))
            if number % 20 == 19:  # 20 frames a batch, as they come off a socket
                pause = began + (number + 1) / rate - time.perf_counter()
                await asyncio.sleep(max(pause, 0))
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu_before
        stop.set()
        await asyncio.gather(*tasks)
    lag = sorted(x * 1000 for x in lags)
    key = sorted(x * 1000 for x in keys)
    print(
        f"in process, {count / wall:.0f} deltas/s for {wall:.1f} s: "
        f"loop lag p50 {statistics.median(lag):.1f} ms, p99 {lag[int(len(lag) * 0.99)]:.1f} ms; "
        f"key latency p50 {statistics.median(key):.1f} ms, p99 {key[int(len(key) * 0.99)]:.1f} ms "
        f"({len(key)} keys); CPU {100 * cpu / wall:.0f} % of one core"
    )


def main() -> None:
    """Run both measurements against a fresh daemon."""
    args = parse_args()
    if shutil.which("tmux") is None:
        sys.exit("this benchmark runs the TUI in tmux: apt-get install tmux")
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        workdir = Path(name)
        port = benchlib.free_port()
        flood = json.dumps([sys.executable, "-c", FLOOD, str(args.rate)])
        config = f'[agents.flood]\nkind = "command"\nargv = {flood}\ntimeout_s = 600\n'
        (workdir / "extra.toml").write_text(config)
        server = start_daemon(workdir, port)
        url = f"http://127.0.0.1:{port}"
        try:
            session = rest(url, "POST", "/api/v1/sessions", {"agent": "flood", "title": "bench"})
            runs = [start_time(url, session["id"], workdir, run) for run in range(args.starts)]
            times, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
            print(
                f"start time ({args.starts} runs, spawn to the session shown connected): "
                f"median {statistics.median(times):.2f} s, max {max(times):.2f} s; "
                f"CPU by then: median {statistics.median(cpus):.2f} s"
            )
            asyncio.run(responsiveness(url, session["id"], workdir, args))
            asyncio.run(synthetic(args.rate, min(args.seconds, 5.0)))
        finally:
            benchlib.stop(server)


def start_daemon(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """``aiosvc serve`` on the servers' core with the bench limits and the flood agent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOSVC_")}
    config = workdir / "bench.toml"
    config.write_text(benchlib.BENCH_CONFIG + (workdir / "extra.toml").read_text())
    log = (workdir / "aiosvc.log").open("ab")
    argv = [sys.executable, "-m", "aiosvc", "serve", "--port", str(port)]
    argv += ["--db", str(workdir / "bench.db"), "--config", str(config)]
    process = benchlib.server_process(argv, stdout=log, stderr=log, env=env)
    benchlib.wait_until_up(f"http://127.0.0.1:{port}/health")
    return process


if __name__ == "__main__":
    main()

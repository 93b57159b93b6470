"""The subscribers of one server in the client process, and the phases published to them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from fanout.aiohttp_subscribers import AioSSE, AioWS
from fanout.figures import latency_figures, order_figures
from fanout.raw_subscribers import RawSSE, RawWS
from fanout.subscribers import Recorder, Sub
from fanout.system import SCRIPT, tcp_queue

if TYPE_CHECKING:
    import aiohttp


class Group:
    """The subscribers of one server."""

    def __init__(self, port: int, pid: int, client: str) -> None:
        self.port = port
        self.pid = pid
        self.client = client
        self.recorder = Recorder()
        self.subs: list[Sub] = []
        self.stalled: RawWS | None = None
        self.stalled_bytes = 0
        self.session: aiohttp.ClientSession | None = None

    def make(self, kind: str) -> Sub:
        """A new subscriber of the chosen client implementation."""
        if self.client == "raw":
            return RawWS(self.recorder) if kind == "ws" else RawSSE(self.recorder)
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        session = self.session
        return AioWS(self.recorder, session) if kind == "ws" else AioSSE(self.recorder, session)

    async def connect(self, ws: int, sse: int) -> dict[str, Any]:
        """Open the subscribers, at most 64 connecting at a time."""
        started = time.monotonic()
        gate = asyncio.Semaphore(64)

        async def one(kind: str) -> None:
            """Open one subscriber of this kind."""
            async with gate:
                sub = self.make(kind)
                self.subs.append(sub)
                await asyncio.wait_for(sub.open(self.port), 30)

        await asyncio.gather(*(one("ws") for _ in range(ws)), *(one("sse") for _ in range(sse)))
        return {"connected": len(self.subs), "seconds": time.monotonic() - started}

    async def phase(
        self, *, run: int, mode: str, rate: float, seconds: float, window: int, pad: int
    ) -> dict[str, Any]:
        """Have a publisher process publish one phase; return the figures of its deliveries.

        It waits for the deliveries at most 10 s after the last post.
        """
        recorder = self.recorder
        live = [sub for sub in self.subs if sub.ended is None]
        for sub in self.subs:
            sub.reset()
        recorder.begin(run)
        spec = {
            "port": self.port,
            "server_pid": self.pid,
            "run": run,
            "mode": mode,
            "rate": rate,
            "seconds": seconds,
            "window": window,
            "pad": pad,
        }
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--publisher",
            json.dumps(spec),
            stdout=asyncio.subprocess.PIPE,
        )
        assert publisher.stdout is not None
        try:
            first_send = json.loads(await publisher.stdout.readline())["first_send"]
            cpu_start = time.process_time()
            line = await publisher.stdout.readline()
            receiver_cpu = time.process_time() - cpu_start
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                publisher.kill()
            raise
        finally:
            await publisher.wait()
        if not line:
            raise RuntimeError(f"the publisher failed (exit status {publisher.returncode})")
        outcome = json.loads(line)
        ok: list[int] = outcome["ok"]
        window_s = (
            max(1, round(rate * seconds)) / rate
            if mode == "fixed"
            else outcome["publish_end"] - first_send
        )
        recorder.expect(len(ok) * len(live))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.done.wait(), 10.0)
        # Deliveries over the time from the first post to the last delivery's arrival (at least
        # the publishing time): a server that keeps up gets the offered rate, one that falls
        # behind is charged its backlog.
        span = max(recorder.arrived, default=first_send + window_s) - first_send
        return {
            "events": len(ok),
            "post_failures": outcome["failed"],
            "subscribers": len(live),
            "window_s": window_s,
            "events_per_s": len(ok) / window_s,
            "deliveries": len(recorder.sent),
            "expected": len(ok) * len(live),
            "deliveries_per_s": len(recorder.sent) / max(span, window_s),
            "span_s": span,
            "server_cpu": outcome["server_cpu"],
            "client_core": outcome["client_core"],
            "receiver_cpu": receiver_cpu / max(outcome["publish_end"] - first_send, 1e-9),
            "publisher_cpu": outcome["publisher_cpu"],
            # Busy time of the two cores that was none of this benchmark's processes.
            "others_server_core": max(0.0, outcome["server_core"] - outcome["server_cpu"]),
            "others_client_core": max(
                0.0,
                outcome["client_core"]
                - receiver_cpu / max(outcome["publish_end"] - first_send, 1e-9)
                - outcome["publisher_cpu"],
            ),
            "stale": recorder.stale,
            "other": recorder.other,
            "unstamped": recorder.unstamped,
            **latency_figures("", recorder.sent, recorder.arrived),
            **latency_figures("seen_", recorder.sent, recorder.seen),
            **order_figures(live, set(ok)),
            "ended": sorted({sub.ended for sub in self.subs if sub.ended is not None}),
            "ended_count": sum(sub.ended is not None for sub in self.subs),
            "stalled_queues": self.stalled_queues(),
        }

    async def add_stalled(self, rcvbuf: int) -> dict[str, Any]:
        """Connect one more WebSocket subscriber that stops reading once subscribed."""
        if self.stalled is not None:
            raise RuntimeError("one stalled subscriber at a time: unstall the last one first")
        self.stalled = RawWS(Recorder())
        await asyncio.wait_for(self.stalled.open(self.port, rcvbuf=rcvbuf), 30)
        self.stalled.pause()  # from now on, it never reads
        self.stalled_bytes = self.stalled.bytes
        assert self.stalled.sock is not None
        return {"rcvbuf": self.stalled.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}

    def stalled_queues(self) -> dict[str, int]:
        """The server's send queue to the stalled subscriber and its receive queue, in bytes."""
        stalled = self.stalled
        if stalled is None or stalled.sock is None:
            return {}
        client_port = stalled.sock.getsockname()[1]
        return {
            "server_send_queue": tcp_queue((self.port, client_port), "tx"),
            "client_receive_queue": tcp_queue((client_port, self.port), "rx"),
        }

    async def stalled_report(self) -> dict[str, Any]:
        """Read what the stalled subscriber was sent (for up to 3 s) and say how it ended.

        It reads on afterwards, until it is dropped.
        """
        stalled = self.stalled
        assert stalled is not None
        ended_before = stalled.ended
        queues = self.stalled_queues()
        stalled.resume()
        last = -1
        for _ in range(30):  # until nothing more arrives for 0.1 s, at most 3 s
            await asyncio.sleep(0.1)
            if stalled.bytes == last:
                break
            last = stalled.bytes
        return {
            "ended_while_stalled": ended_before,
            "ended": stalled.ended,
            "close_code": stalled.close_code,
            "event_frames": stalled.frames,
            "backlog_bytes": stalled.bytes - self.stalled_bytes,
            **queues,
        }

    def drop_stalled(self) -> dict[str, Any]:
        """Close the stalled subscriber's socket and forget it, so that another can be added."""
        stalled = self.stalled
        if stalled is None:
            raise RuntimeError("no stalled subscriber to drop")
        self.stalled = None
        stalled.close()
        return {"ended": stalled.ended}

    async def close(self) -> None:
        """Drop every connection."""
        for sub in self.subs:
            sub.close()
        if self.stalled is not None:
            self.stalled.close()
        if self.session is not None:
            await self.session.close()

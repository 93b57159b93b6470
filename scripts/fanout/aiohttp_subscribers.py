"""Subscribers on aiohttp's client, to compare with the raw ones (no kernel arrival times).

aiohttp is imported only when one is made, so that the raw client process does not load it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fanout.subscribers import Recorder, SSEBody, Sub, masked_frame
from fanout.system import HOST

if TYPE_CHECKING:
    import aiohttp


class AioWS(Sub):
    """A WebSocket subscriber on aiohttp's client (no kernel timestamps: arrival = parsed)."""

    kind = "ws"

    def __init__(self, recorder: Recorder, session: aiohttp.ClientSession) -> None:
        super().__init__(recorder)
        self.session = session
        self.task: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self, port: int) -> None:
        """Start the stream's task and wait until subscribed."""
        self.task = asyncio.get_running_loop().create_task(self._run(port))
        await self.ready

    def send_text(self, payload: bytes) -> None:
        """Send a WebSocket text message."""
        # Called from the synchronous parser, where aiohttp's send_str (a coroutine) cannot be
        # awaited: the masked frame goes straight to the transport.
        if self.ws is not None:
            self.ws._writer.transport.write(masked_frame(0x1, payload))

    async def _run(self, port: int) -> None:
        import aiohttp

        try:
            async with self.session.ws_connect(
                f"http://{HOST}:{port}/api/v1/ws", compress=0, max_msg_size=0
            ) as ws:
                self.ws = ws
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        now = time.time()
                        self.on_ws_text(message.data, now, now)
                self.close_code = ws.close_code
                self.end(f"closed by the server ({ws.close_code})")
        except (aiohttp.ClientError, OSError) as exc:
            self.end(repr(exc))

    def close(self) -> None:
        """Cancel the stream's task, which drops the connection."""
        if self.task is not None:
            self.task.cancel()


class AioSSE(Sub):
    """An SSE subscriber on aiohttp's client (no kernel timestamps: arrival = parsed)."""

    kind = "sse"

    def __init__(self, recorder: Recorder, session: aiohttp.ClientSession) -> None:
        super().__init__(recorder)
        self.session = session
        self.task: asyncio.Task[None] | None = None
        self.body = SSEBody(self)

    async def open(self, port: int) -> None:
        """Start the stream's task and wait until subscribed."""
        self.task = asyncio.get_running_loop().create_task(self._run(port))
        await self.ready

    async def _run(self, port: int) -> None:
        import aiohttp

        url = f"http://{HOST}:{port}/api/v1/events?topics=hooks"
        try:
            async with self.session.get(url) as response:
                if response.status != 200:
                    self.end(f"refused: {response.status}")
                    return
                async for data in response.content.iter_any():
                    now = time.time()
                    self.body.feed(data, now, now)
                self.end("the stream ended")
        except (aiohttp.ClientError, OSError) as exc:
            self.end(repr(exc))

    def close(self) -> None:
        """Cancel the stream's task, which drops the connection."""
        if self.task is not None:
            self.task.cancel()

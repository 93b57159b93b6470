"""The WebSocket streams: ``/api/v1/ws`` (multiplexed) and ``/api/v1/sessions/{id}/ws``.

Couplings to how aiohttp writes a WebSocket (marked ``# aiohttp-internals:``): while a client
keeps up, text frames built by :func:`~aiosvc.web.frames.websocket_text` go straight to the
transport (:meth:`WebSocketStream.write_now`), past aiohttp's writer, which assumes that the
socket is not compressed (checked when the stream starts: :func:`uncompressed`) and that
aiohttp's writer holds nothing back between frames, so direct frames and its own (pings,
close) never interleave mid-frame (pinned by ``tests/test_frames.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from aiosvc import __version__
from aiosvc.bus import session_topic
from aiosvc.config import Config
from aiosvc.convert import INT_LIMIT, loads, structure, unstructure
from aiosvc.errors import AppError, ValidationFailed
from aiosvc.web import ws_ops
from aiosvc.web.frames import WebSocketFraming, websocket_text
from aiosvc.web.front_door import stamp
from aiosvc.web.keys import BUS, METRICS, SETTINGS, STREAMS
from aiosvc.web.limits import TokenBucket
from aiosvc.web.operation import operation
from aiosvc.web.outbox import Ending, Outbox
from aiosvc.web.sessions import BASE, session_from_path
from aiosvc.web.stream import CLOSE_TIMEOUT_S, StreamConnection
from aiosvc.web.ws_ops import ACKED, OPS

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
FRAMING = WebSocketFraming()
MAX_CLIENT_ID = 128  # characters of an op's "id"
MAX_LIMITED = 20  # messages refused in a row for the rate before the socket is closed


class WebSocketStream(StreamConnection):
    """One WebSocket client: reads ops, writes events through its outbox."""

    kind = "ws"

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, bound: str | None, config: Config
    ):
        app = request.app
        outbox = Outbox(app[BUS], FRAMING, config.streams, app[STREAMS].flusher)
        super().__init__(outbox, request.transport, config.streams.outbox_low_bytes, app[METRICS])
        self.app = app
        self.ws = ws
        self.bound = bound  # the session of /sessions/{id}/ws
        self.heartbeat_s = config.streams.heartbeat_s
        limits = config.limits
        self.bucket = TokenBucket(limits.ws_messages_per_s, limits.ws_burst)
        self.limited = 0  # messages refused in a row for the rate

    async def send(self, frames: Sequence[bytes]) -> None:
        """Write each frame as one text message."""
        for frame in frames:
            await self.ws.send_frame(frame, WSMsgType.TEXT)

    def writable(self) -> bool:
        """Open, not closing, and keeping up."""
        return not self.ws.closed and super().writable()

    def write_now(self, frames: Sequence[bytes]) -> None:
        """Write each frame as one text message, all in one write (the socket is not
        compressed, so the frames are what :meth:`send` would write)."""
        assert self.transport is not None  # writable() said so
        # aiohttp-internals: past aiohttp's writer, framed as it frames an uncompressed text.
        if len(frames) == 1:
            self.transport.write(websocket_text(frames[0]))
        else:
            self.transport.write(b"".join([websocket_text(frame) for frame in frames]))

    async def finish(self, ending: Ending) -> None:
        """Close with 1013 for a client too slow to keep up, 1001 for shutdown."""
        if ending is Ending.OVERFLOW:
            await self.ws.close(
                code=WSCloseCode.TRY_AGAIN_LATER,
                message=b"too slow to keep up: resume from your last event id",
            )
        elif ending is Ending.SHUTDOWN:
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    def abort(self) -> None:
        """Drop the TCP connection."""
        if self.transport is not None:
            self.transport.abort()

    async def run(self) -> None:
        """Greet, then read ops until the socket closes."""
        bus = self.app[BUS]
        self.outbox.put(
            FRAMING.message(
                "hello",
                data={
                    "version": __version__,
                    "last_event_id": bus.last_id,
                    "heartbeat_s": self.heartbeat_s,
                },
            )
        )
        if self.bound is not None:
            self.outbox.subscribe([session_topic(self.bound)])
        self.start_writer()
        try:
            while True:
                message = await self.ws.receive()
                if message.type is WSMsgType.TEXT:
                    await self._on_text_safely(message.data)
                elif message.type is WSMsgType.BINARY:
                    self.end_reason("protocol_error")
                    await self._close(WSCloseCode.UNSUPPORTED_DATA, b"binary frames are refused")
                    return
                else:  # closing, closed, or an error aiohttp already closed for (1009)
                    error = message.data if message.type is WSMsgType.ERROR else None
                    self.end_reason(_why_closed(error))
                    return
        except asyncio.CancelledError:  # the connection was lost under the handler
            self.end_reason(_why_closed(self.ws.exception()))
            raise
        except Exception:
            self.end_reason("error")
            raise
        finally:
            await self.stop_writer()

    async def _close(self, code: int, reason: bytes) -> None:
        await self.stop_writer()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(code=code, message=reason)
        except TimeoutError:
            self.abort()

    # Ops ---------------------------------------------------------------------------------------

    async def _on_text_safely(self, text: str) -> None:
        """Run one op; a failure nobody foresaw is an error frame (the socket is upgraded: an
        HTTP answer written now would corrupt the stream) and the socket stays open."""
        try:
            await self.on_text(text)
        except Exception:
            log.exception("ws_op_failed")
            self._error(None, AppError("the server failed to handle this message"))

    async def on_text(self, text: str) -> None:
        """Run one op and answer it with an ``ack`` or an ``error`` frame."""
        if self.bucket.take():
            self.limited += 1
            if self.limited > MAX_LIMITED:
                self.end_reason("too_many_messages")
                await self._close(WSCloseCode.POLICY_VIOLATION, b"too many messages")
                return
            error = AppError("too many messages: slow down", code="rate_limited", status=429)
            self._error(None, error)
            return
        self.limited = 0
        try:
            frame = loads(text.encode("utf-8", errors="surrogatepass"))
        except AppError as exc:
            self._error(None, exc)
            return
        if not isinstance(frame, dict):
            self._error(None, ValidationFailed({"$": "a frame must be a JSON object"}))
            return
        client_id = frame.pop("id", None)
        if not _valid_client_id(client_id):
            error = ValidationFailed(
                {"id": "expected a string of at most 128 characters or a 64-bit integer"}
            )
            self._error(None, error)
            return
        name = frame.pop("op", None)
        op = OPS.get(name) if isinstance(name, str) else None
        if op is None:
            self._error(
                client_id,
                AppError(
                    f"unknown op {name!r}",
                    code="unknown_op",
                    details={"ops": sorted(OPS)},
                    status=400,
                ),
            )
            return
        try:
            data = await op.handler(self, structure(frame, op.body), client_id)
        except AppError as exc:
            self._error(client_id, exc)
            return
        if data is not ACKED:
            self.outbox.put(FRAMING.message("ack", id=client_id, data=unstructure(data)))

    def _error(self, client_id: object, error: AppError) -> None:
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.details:
            body["details"] = error.details
        fields: dict[str, Any] = {"error": body}
        if client_id is not None:
            fields["id"] = client_id
        self.outbox.put(FRAMING.message("error", **fields))

    def session_id(self, given: str | None) -> str:
        """The session an op names, or the one the socket is bound to."""
        session_id = given if given is not None else self.bound
        if session_id is None:
            raise ValidationFailed({"session_id": "required field is missing"})
        return session_id


def uncompressed(ws: web.WebSocketResponse) -> web.WebSocketResponse:
    """``ws``, refused if it is compressed: its frames are written directly, uncompressed."""
    if ws.compress:
        raise RuntimeError("a WebSocket whose frames are written directly cannot be compressed")
    return ws


def _why_closed(error: object) -> str:
    """Why the socket ended, from the error aiohttp saw, if any (when the server closed it,
    the reason was recorded as it did: this is then the client's side closing). A missed
    pong closes the connection, which may cancel the handler before it reads the error."""
    if error is None or isinstance(error, ConnectionError):
        return "closed_by_client"  # its close frame, or the connection ended
    if isinstance(error, WebSocketError):
        too_big = error.code == WSCloseCode.MESSAGE_TOO_BIG
        return "message_too_big" if too_big else "protocol_error"
    if isinstance(error, TimeoutError):  # no pong to the heartbeat's ping
        return "heartbeat_timeout"
    return "error"


def _valid_client_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, int) and not isinstance(value, bool):
        return -INT_LIMIT <= value < INT_LIMIT  # echoed as JSON: a 64-bit integer
    return isinstance(value, str) and len(value) <= MAX_CLIENT_ID


# Routes ---------------------------------------------------------------------------------------


@routes.get("/api/v1/ws")
@operation(responses={101: None}, stream="websocket", messages=ws_ops.bodies())
async def multiplexed(request: web.Request) -> web.StreamResponse:
    """A WebSocket for any topics the client subscribes to."""
    return await _serve(request, None)


@routes.get(BASE + "/{id}/ws")
@operation(responses={101: None}, stream="websocket", messages=ws_ops.bodies())
async def bound_to_session(request: web.Request) -> web.StreamResponse:
    """A WebSocket subscribed to one session from the start."""
    session = session_from_path(request)  # 404 before the upgrade
    return await _serve(request, session.id)


async def _serve(request: web.Request, bound: str | None) -> web.StreamResponse:
    # read once: the stream keeps the settings it opened with; a reload applies to new streams
    config = request.app[SETTINGS].config
    ws = web.WebSocketResponse(
        heartbeat=config.streams.heartbeat_s,
        max_msg_size=config.limits.max_ws_frame_bytes,
        compress=False,  # per-message deflate costs CPU per client for little gain on loopback
        timeout=CLOSE_TIMEOUT_S,
    )
    if not ws.can_prepare(request).ok:
        raise AppError("this route needs a WebSocket upgrade", code="upgrade_required", status=426)
    stamp(ws)
    await ws.prepare(request)
    stream = WebSocketStream(request, uncompressed(ws), bound, config)
    streams = request.app[STREAMS]
    streams.add(stream)
    try:
        await stream.run()
    finally:
        streams.discard(stream)
        stream.closed()
    return ws

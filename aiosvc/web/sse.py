"""The SSE streams: ``/api/v1/events`` (all topics, or ``?topics=``) and
``/api/v1/sessions/{id}/events``.

Couplings to how aiohttp writes a response (marked ``# aiohttp-internals:``): frames go
straight to the transport once the body has started (:meth:`SSEStream.write_now`), framed as
aiohttp frames the body, which assumes that

- aiohttp sends a response's headers with its first body write, not when it is prepared: the
  body is started with a write through aiohttp (``retry:``) before any direct write;
- a streamed HTTP/1.1 body without a length is chunked, and its ``Transfer-Encoding`` header
  says so (HTTP/1.0: as it comes), the chunks framed as :func:`~aiosvc.web.frames.http_chunk`
  frames them (pinned by ``tests/test_frames.py``; HTTP/1.0 by ``tests/test_streams.py``);
- the response is not compressed (checked: a compressed one is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiohttp import hdrs, web
from aiohttp_sse import EventSourceResponse

from aiosvc.bus import ALL, is_valid_topic, session_topic
from aiosvc.errors import InvalidParameter
from aiosvc.peers.link import PEER_HEADER
from aiosvc.rules import MAX_TOPICS, TOPICS
from aiosvc.web import remote
from aiosvc.web.frames import SSEFraming, http_chunk
from aiosvc.web.front_door import stamp
from aiosvc.web.keys import BUS, METRICS, SETTINGS, STREAMS
from aiosvc.web.operation import MAX_OFFSET, Param, operation
from aiosvc.web.outbox import Ending, Outbox
from aiosvc.web.sessions import BASE, session_from_path
from aiosvc.web.stream import StreamConnection

routes = web.RouteTableDef()
FRAMING = SSEFraming()
RETRY = b"retry: 2000\n\n"  # how long a browser waits before it reconnects
EVENT_ID = {"minimum": 0, "maximum": MAX_OFFSET}
RESUME = (
    Param("Last-Event-ID", int, "Resume after this event id.", EVENT_ID, where="header"),
    Param("last_event_id", int, "Resume after this event id (where headers cannot go).", EVENT_ID),
)


class SSEStream(StreamConnection):
    """One EventSource client."""

    kind = "sse"

    def __init__(
        self, request: web.Request, response: EventSourceResponse, outbox: Outbox, low_mark: int
    ):
        super().__init__(outbox, request.transport, low_mark, request.app[METRICS])
        self.request = request
        self.response = response
        self.chunked = False  # known once the body has started
        self.started = False  # the headers are out: frames may be written directly

    def body_started(self) -> None:
        """The headers are out, with the body's first bytes: from now on frames may go to
        the transport directly, framed as aiohttp frames the body."""
        if self.response.compression:
            raise RuntimeError("an event stream's frames are written directly: no compression")
        # aiohttp-internals: a streamed HTTP/1.1 body is chunked, and the header says so.
        self.chunked = self.response.headers.get(hdrs.TRANSFER_ENCODING) == "chunked"
        self.started = True

    def writable(self) -> bool:
        """Started, open and keeping up."""
        return self.started and super().writable()

    async def send(self, frames: Sequence[bytes]) -> None:
        """Write the frames as one chunk."""
        await self.response.write(b"".join(frames))

    def write_now(self, frames: Sequence[bytes]) -> None:
        """Write the frames as one chunk, framed as :meth:`send` would (chunked for HTTP/1.1,
        as they come for HTTP/1.0)."""
        assert self.transport is not None  # writable() said so
        # aiohttp-internals: past aiohttp's writer, framed as it frames a body.
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.transport.write(http_chunk(data) if self.chunked else data)

    async def finish(self, ending: Ending) -> None:
        """End the response (after the shutdown event, when that is why)."""
        if ending is not Ending.CLOSED:
            await self.response.write_eof()

    def abort(self) -> None:
        """Drop the TCP connection."""
        if self.transport is not None:
            self.transport.abort()


@routes.get("/api/v1/events")
@operation(
    responses={200: str},
    stream="sse",
    params=[
        Param(
            "topics",
            str,
            f"Comma-separated: {TOPICS}; all events when absent.",
        ),
        *RESUME,
    ],
)
async def all_events(request: web.Request) -> web.StreamResponse:
    """Every event, or those of ``?topics=a,b``."""
    raw = request.query.get("topics")
    topics = [t for t in raw.split(",") if t] if raw is not None else [ALL]
    if not topics or len(topics) > MAX_TOPICS or not all(is_valid_topic(t) for t in topics):
        raise InvalidParameter("topics", f"expected a comma-separated list of {TOPICS}")
    return await _stream(request, topics)


@routes.get(BASE + "/{id}/events")
@operation(responses={200: str}, stream="sse", params=RESUME)
async def session_events(request: web.Request) -> web.StreamResponse:
    """Everything about one session (another computer's: relayed from it)."""
    if remote.remote_session(request) is not None:
        return await _stream(request, [session_topic(request.match_info["id"])])
    session = session_from_path(request)
    return await _stream(request, [session_topic(session.id)])


def _last_event_id(request: web.Request) -> int | None:
    """The resume point: ``Last-Event-ID``, or ``?last_event_id=`` where headers cannot go."""
    raw = request.headers.get("Last-Event-ID")
    name = "Last-Event-ID"
    if raw is None:
        raw = request.query.get("last_event_id")
        name = "last_event_id"
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidParameter(name, "must be an event id (an integer >= 0)")
    return int(raw)


async def _stream(request: web.Request, topics: list[str]) -> web.StreamResponse:
    app = request.app
    since = _last_event_id(request)  # a bad id is a 400, before the stream starts
    config = app[SETTINGS].config.streams
    streams = app[STREAMS]
    outbox = Outbox(app[BUS], FRAMING, config, streams.flusher)
    if PEER_HEADER in request.headers:  # a peer's relay: no loops
        outbox.for_peer()
    outbox.subscribe(topics, since)
    response = EventSourceResponse(ping_interval=config.sse_ping_s)
    stream = SSEStream(request, response, outbox, config.outbox_low_bytes)
    try:
        stamp(response)
        await response.prepare(request)
        # aiohttp-internals: the headers go out with the body's first write, not at prepare.
        await response.write(RETRY)
        stream.body_started()
        streams.add(stream)
        stream.start_writer()
        assert stream.writer is not None
        with contextlib.suppress(ConnectionError):  # the client left mid-write
            await stream.writer
    except asyncio.CancelledError:  # the connection was lost under the handler
        stream.end_reason("closed_by_client")
        raise
    except Exception:
        stream.end_reason("error")
        raise
    finally:
        streams.discard(stream)
        await stream.stop_writer()
        if response.prepared:
            response.stop_streaming()
            stream.closed()
    return response

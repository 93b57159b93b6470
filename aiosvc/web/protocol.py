"""One connection's HTTP protocol: deadlines, a bound on an unfinished head, strict
WebSocket framing, and parser errors answered in the envelope without reaching the log.

aiohttp's :class:`~aiohttp.web_protocol.RequestHandler` parses requests and runs handlers;
:class:`GuardedProtocol` adds what it lacks:

- a request's line and headers must arrive within ``header_timeout_s`` (from the
  connection's start, or from the first byte of a later request), and hold no more than
  ``max_header_bytes`` (aiohttp's own limits allow about 2 MiB, twice that in memory); a
  declared body must arrive within ``body_timeout_s`` of its headers (408);
- a client frame that is not masked fails the WebSocket with 1002 (RFC 6455, 5.1);
- a request the parser refuses is answered in the error envelope, with a request id, and
  logged by name only (aiohttp logs the raw request, credentials and all);
- a connection ended while its client may still be sending closes lingering
  (:mod:`aiosvc.web.linger`), so the client gets what it was sent instead of a reset.

Couplings to aiohttp's internals, each marked ``# aiohttp-internals:`` where it is used and
pinned by ``tests/test_aiohttp_pins.py`` (the last by ``tests/test_deadlines_process.py``):

- ``RequestHandler._request_count`` counts the request heads parsed on the connection
  (refused ones too): how :meth:`GuardedProtocol.data_received` tells a head is complete;
- ``BaseProtocol._upgraded`` is true while the bytes after an upgrade request wait for the
  WebSocket: they are no request head;
- ``RequestHandler._request_in_progress`` is true while a handler runs: nothing of ours may
  be written then;
- ``RequestHandler.set_parser`` gives the connection's input to a WebSocket reader, and
  ``handle_error`` answers a request the parser refused: both are overridden;
- aiohttp's WebSocket reader fails with 1002 on a reserved opcode, which is how an unmasked
  frame becomes aiohttp's own protocol error and close frame (:mod:`aiosvc.web.masked`);
- after a response, aiohttp reads what is left of an unread body and stops quietly on a
  ``TimeoutError``, which :class:`BodyTimedOut` is;
- aiohttp calls ``data_received(b"")`` to parse what it buffered when it resumes reading
  (once a request's body is read): no bytes came, so no head deadline starts (pinned by
  ``tests/test_external_approvals.py``, whose waits outlast ``header_timeout_s``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from aiosvc.errors import AppError
from aiosvc.logs.throttle import Throttled
from aiosvc.web.front_door import REQUEST_ID_HEADER, new_request_id
from aiosvc.web.limits import ConnectionCounter, is_local
from aiosvc.web.linger import Lingering, unread_bytes
from aiosvc.web.masked import MaskedFramesOnly
from aiosvc.web.responses import error_response

log = structlog.get_logger(__name__)


# aiohttp-internals: its lingering read of an unread body stops quietly on a TimeoutError.
class BodyTimedOut(AppError, TimeoutError):
    """The request's body did not arrive in time (a ``TimeoutError`` too, which ends
    aiohttp's reading of an unread body quietly)."""

    status = 408
    code = "request_timeout"


@attrs.frozen(kw_only=True)
class Settings:
    """What every connection is held to (from ``[limits]``)."""

    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int


@attrs.define(kw_only=True)
class Guard:
    """What the connections of one server share: their settings and counts, the lingering
    sockets, and the throttled log lines of what happens to them."""

    settings: Settings
    counter: ConnectionCounter
    lingering: Lingering
    closed: Throttled = attrs.field(
        factory=lambda: Throttled("connection_closed", level="info", logger=log)
    )
    refused: Throttled = attrs.field(
        factory=lambda: Throttled("connection_refused", level="warning", logger=log)
    )
    unparsable: Throttled = attrs.field(
        factory=lambda: Throttled("request_unparsable", level="info", logger=log)
    )


class Canned:
    """A whole HTTP answer carrying an error, closing the connection: written where no
    request object exists (a refused connection, a head that will not do). Each gets its
    own request id."""

    def __init__(self, error: AppError, extra: str = "") -> None:
        self.body = orjson.dumps(error.envelope())
        self.head = (
            f"HTTP/1.1 {error.status} {_REASONS[error.status]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
            f"Connection: close\r\n{extra}{REQUEST_ID_HEADER}: "
        )

    def __call__(self) -> bytes:
        """The answer's bytes."""
        return f"{self.head}{new_request_id()}\r\n\r\n".encode("ascii") + self.body


_REASONS = {
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class GuardedProtocol(RequestHandler):
    """aiohttp's request handler with deadlines, a head size bound, masked WebSocket frames
    only, quiet parser errors and lingering closes (see the module's description)."""

    __slots__ = (
        "_bodies_done",
        "_body_timer",
        "_client",
        "_counted",
        "_fd",
        "_guard",
        "_head_bytes",
        "_head_timer",
        "_linger",
        "_refused",
        "_websocket",
    )

    def __init__(self, manager: web.Server, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._client: str | None = None  # its address, once accepted
        self._counted: str | None = None  # the address it is counted for, if it is
        self._fd = -1
        self._bodies_done = 0  # heads whose body (if any) has fully arrived
        self._head_bytes = 0  # bytes of the head being received
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._websocket = False
        self._linger = False  # close lingering even if nothing waits unread
        self._refused = False

    # The connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the client's address, refuse it over its limit, start the head deadline.

        Local clients are not counted per address: they all share it, so one of them would
        keep out every other (they are told apart by credential once a request says which).
        """
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "local"
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        if not is_local(client):
            if not self._guard.counter.enter(client):
                self._refused = True
                self._guard.refused(reason="per_client_limit", client=client)
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(TOO_MANY())
                transport.close()
                return
            self._counted = client
        self._client = client
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Linger if the client may still be sending, then let aiohttp clean up."""
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        fd, self._fd = self._fd, -1
        if exc is None and fd >= 0 and (self._linger or unread_bytes(fd)):
            self._guard.lingering.adopt(fd)
        if fd >= 0:  # (only once)
            self._guard.counter.leave(self._counted)
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse, then hold an unfinished head to its deadline and its size bound."""
        if self._refused:
            return
        # aiohttp-internals: _request_count counts the heads parsed so far.
        in_head = self._request_count == self._bodies_done
        super().data_received(data)
        # aiohttp-internals: _upgraded (bytes after an upgrade request wait for the socket)
        if self._websocket or self._upgraded:
            return
        if not in_head or self._request_count != self._bodies_done:
            # These bytes finished a head, or belong to a body (maybe ending it).
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._head_bytes = 0
            return
        self._head_bytes += len(data)
        if self._head_bytes > self._guard.settings.max_header_bytes:
            self._end_head(HEAD_TOO_LARGE, "head_too_large")
        elif self._head_timer is None and data:
            # Only bytes that came start a head's deadline: aiohttp calls this with b"" when
            # it resumes reading (a body was read), which must not time the request that runs.
            self._arm_head_timer()

    # Deadlines --------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = asyncio.get_running_loop().call_later(
            self._guard.settings.header_timeout_s, self._head_late
        )

    def _head_late(self) -> None:
        self._head_timer = None
        if self._head_bytes:
            self._end_head(HEAD_TIMEOUT, "head_timeout")
        else:  # an idle new connection (browsers open some ahead): no answer, no log line
            self.force_close()

    def _end_head(self, answer: Canned, why: str) -> None:
        """Answer and close a connection whose head will not do."""
        transport = self.transport
        if transport is None:
            return
        self._guard.closed(reason=why, client=self._client, bytes=self._head_bytes)
        # aiohttp-internals: _request_in_progress (a handler is writing its own answer)
        if not self._request_in_progress:
            transport.write(answer())
        self._linger = True
        self.force_close()

    def request_started(self, payload: StreamReader) -> None:
        """A head is parsed and its request made: time its body, if one is coming."""
        if payload.is_eof():
            self._bodies_done += 1
            return
        self._body_timer = asyncio.get_running_loop().call_later(
            self._guard.settings.body_timeout_s, self._body_late, payload
        )
        payload.on_eof(self._body_complete)

    def _body_complete(self) -> None:
        self._bodies_done += 1
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_late(self, payload: StreamReader) -> None:
        self._body_timer = None
        if payload.is_eof() or payload.exception() is not None:
            return
        self._guard.closed(reason="body_timeout", client=self._client)
        self._linger = True
        # The handler reading it answers 408; a body nobody reads ends the connection.
        payload.set_exception(
            BodyTimedOut(
                "the request body did not arrive in time",
                details={"timeout_s": self._guard.settings.body_timeout_s},
            )
        )

    # WebSocket and parser errors --------------------------------------------------------------

    # aiohttp-internals: set_parser is how a WebSocket takes the connection's input.
    def set_parser(self, parser: Any, data_received_cb: Any = None) -> None:
        """The connection became a WebSocket: its frames go to ``parser``, masked ones only."""
        self._websocket = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        reader = MaskedFramesOnly(parser, self._frames_failed)
        super().set_parser(reader, data_received_cb)  # type: ignore[arg-type]

    def _frames_failed(self) -> None:
        self._linger = True  # the client may be in the middle of a large frame

    # aiohttp-internals: handle_error answers a head the parser refused (and logs it raw).
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request the parser refused: the envelope, a request id, and a log line naming the
        error only (its text quotes the raw request, credentials included)."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        error = parse_error(exc, status)
        rid = new_request_id()
        self._guard.unparsable(
            request_id=rid, status=error.status, error=type(exc).__name__, remote=request.remote
        )
        response = error_response(error)
        response.headers[REQUEST_ID_HEADER] = rid
        response.force_close()
        return response


def parse_error(exc: HttpProcessingError, status: int) -> AppError:
    """The error to answer for what the parser refused, in words that quote nothing sent."""
    if isinstance(exc, LineTooLong):
        return AppError(
            "a request line or header is over the size limit",
            code="header_too_large",
            status=431,
        )
    if isinstance(exc, BadHttpMethod):
        return AppError("the request's method is not valid", code="bad_request", status=400)
    return AppError("the request is not valid HTTP/1.1", code="bad_request", status=status)


TOO_MANY = Canned(
    AppError("too many connections: try again later", code="too_many_connections", status=503),
    "Retry-After: 1\r\n",
)
HEAD_TIMEOUT = Canned(
    AppError("the request's headers did not arrive in time", code="request_timeout", status=408)
)
HEAD_TOO_LARGE = Canned(
    AppError(
        "the request line and headers are over the size limit",
        code="header_too_large",
        status=431,
    )
)

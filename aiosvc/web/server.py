"""The HTTP server under the application: connections capped when accepted, each served by
a :class:`~aiosvc.web.protocol.GuardedProtocol` with its deadlines.

aiohttp's sites take their protocol factory from the runner's server (a
:class:`aiohttp.web.Server`, which makes a request handler per connection).
:class:`GuardedRunner` hands them a :class:`GuardedServer` instead, built from the one the
application made, which

- counts TCP connections when they are accepted and answers one over
  ``limits.max_connections`` with a canned 503 before anything reads it (no parser, no
  handler, no task): the cap is kept below the process's descriptor limit, so a flood of
  idle sockets cannot take the descriptors the daemon needs (long-lived requests are held
  below it by the front door, so that short ones always find a place);
- makes a :class:`GuardedProtocol` for every other connection, which ends idle and slow
  ones (``header_timeout_s``, ``body_timeout_s``, ``keepalive_timeout_s``);
- tells each protocol when a request starts (through the server's public
  ``request_factory``), so the protocol can time the request's body.

Couplings to aiohttp's internals (marked ``# aiohttp-internals:``, pinned by
``tests/test_aiohttp_pins.py``): ``AppRunner._make_server`` starts the application and
builds the server whose ``__call__`` the sites use as their protocol factory.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from aiosvc.config import Config, LimitsConfig
from aiosvc.web.keys import SETTINGS
from aiosvc.web.limits import ConnectionCounter, descriptor_budget
from aiosvc.web.linger import LINGER_S, Lingering, unread_bytes
from aiosvc.web.protocol import TOO_MANY, Guard, GuardedProtocol, Settings

log = structlog.get_logger(__name__)

#: The longest header line; aiohttp's default request line limit is kept (8190).
MAX_FIELD_SIZE = 16_384
#: What every connection's request handler is made with, in ``aiosvc serve`` and in tests'
#: servers alike (``create_app`` gives the same to aiohttp's own). A compressed request body
#: is refused (415) rather than inflated: no decompression bombs, and no decoding error raised
#: where no handler could answer it.
HANDLER_ARGS: dict[str, Any] = {"max_field_size": MAX_FIELD_SIZE, "auto_decompress": False}


class RefusedConnection(asyncio.Protocol):
    """A connection over the cap: a canned 503, then closed (lingering if its request is
    waiting unread, so the client reads the answer rather than a reset)."""

    __slots__ = ("_fd", "_guard")

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Answer and close at once."""
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(TOO_MANY())
        transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Linger if the client's request waits unread."""
        if exc is None and self._fd >= 0 and unread_bytes(self._fd):
            self._guard.lingering.adopt(self._fd)
        self._fd = -1


class GuardedServer(web.Server):
    """The application's server, making a guarded protocol per admitted connection."""

    def __init__(self, made: web.Server, guard: Guard, protocol_args: dict[str, Any]) -> None:
        self._app_request = made.request_factory
        super().__init__(
            made.request_handler,
            request_factory=self._request,
            handler_cancellation=made.handler_cancellation,
        )
        self.guard = guard
        self.loop = asyncio.get_running_loop()
        self.protocol_args = protocol_args

    def __call__(self) -> RequestHandler:
        """The protocol of a new connection (the sites' protocol factory)."""
        guard = self.guard
        if not guard.counter.admit():
            guard.refused(reason="limit", limit=guard.counter.limit)
            return RefusedConnection(guard)  # type: ignore[return-value]
        return GuardedProtocol(self, guard, loop=self.loop, **self.protocol_args)

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        request = self._app_request(message, payload, protocol, writer, task)
        if isinstance(protocol, GuardedProtocol):
            protocol.request_started(payload)
        return request

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Shut every connection down, then the lingering ones."""
        await super().shutdown(timeout)
        self.guard.lingering.close_all()


class GuardedRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose sites serve through a :class:`GuardedServer`."""

    __slots__ = ("_protocol_args", "guard")

    def __init__(
        self, app: web.Application, guard: Guard, protocol_args: dict[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard
        self._protocol_args = protocol_args

    # aiohttp-internals: AppRunner._make_server starts the app and makes the sites' server.
    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return GuardedServer(made, self.guard, self._protocol_args)


def _connection_settings(limits: LimitsConfig) -> Settings:
    return Settings(
        header_timeout_s=limits.header_timeout_s,
        body_timeout_s=limits.body_timeout_s,
        max_header_bytes=limits.max_header_bytes,
    )


def make_runner(app: web.Application, config: Config) -> GuardedRunner:
    """The runner ``aiosvc serve`` starts its sites with."""
    limits = config.limits
    cap, lingering = descriptor_budget(limits.max_connections)
    if cap < limits.max_connections:
        log.warning(
            "connection_limit_lowered",
            max_connections=cap,
            configured=limits.max_connections,
            reason="kept below the process's open files limit",
        )
    guard = Guard(
        settings=_connection_settings(limits),
        counter=ConnectionCounter(cap, limits.max_connections_per_client),
        lingering=Lingering(limit=lingering),
    )
    protocol_args: dict[str, Any] = {
        "keepalive_timeout": limits.keepalive_timeout_s,
        **HANDLER_ARGS,
        "lingering_time": LINGER_S,  # an unread body after the answer: drained this long
        "access_log": None,  # the front door writes each request's line
    }

    def reconfigure(config: Config) -> None:
        """A reload: connections accepted from now on get the new deadlines, head bound and
        caps (those already open keep theirs; none is dropped)."""
        limits = config.limits
        guard.settings = _connection_settings(limits)
        guard.counter.limit = descriptor_budget(limits.max_connections)[0]
        guard.counter.per_client_limit = limits.max_connections_per_client
        protocol_args["keepalive_timeout"] = limits.keepalive_timeout_s

    if SETTINGS in app:  # (an app made by create_app; a bare one has no reloads)
        app[SETTINGS].on_change(reconfigure)
    # A client that goes away cancels its handler: streams end at once instead of when a
    # write finally fails. Commands are shielded, so a write still completes.
    return GuardedRunner(
        app,
        guard,
        protocol_args,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.server.shutdown_timeout_s,
        handler_cancellation=True,
    )

"""The front door: request id, the canonical log line and the request metrics, the error
envelope, request checks.

Every handler is wrapped at registration (:meth:`FrontDoor.add_routes`) rather than behind an
aiohttp middleware: with any middleware in the app, aiohttp builds a chain of partials and
enters a context manager (``_fix_request_current_app``) on every request, which together cost
more than the checks themselves. Requests no route matches reach :func:`FrontDoor.no_route`, a
catch-all registered last, so 404 and 405 pass the same door and get the same envelope.
What differs per route (its log level, its counters, whether it is long-lived) is chosen at
registration too.

Long-lived requests (the event streams, and requests that wait for a reply) each hold a
connection for as long as they last: they take a place (:class:`~aiosvc.web.limits.Places`)
once their credential is known, within a cap per credential and a cap in all that leaves the
last connections to ``/health`` and short requests.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import secrets
from collections.abc import Iterable
from contextvars import ContextVar
from time import perf_counter

import attrs
import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from multidict import istr

from aiosvc import logs
from aiosvc.config import LimitsConfig
from aiosvc.errors import (
    AppError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from aiosvc.logs.throttle import Throttled
from aiosvc.metrics import Metrics, RouteStats
from aiosvc.web import params
from aiosvc.web.limits import (
    ConnectionRates,
    Places,
    RateLimiter,
    descriptor_budget,
    long_lived_places,
)
from aiosvc.web.responses import error_response
from aiosvc.web.security import STATE_CHANGING, STREAM_ROUTES, AccessGate, cors_headers

log = structlog.get_logger("aiosvc.access")

#: An ``istr``: multidict looks it up without folding its case each time.
REQUEST_ID_HEADER = istr("X-Request-ID")
#: The name of the catch-all route (it is not part of the API's description).
NO_ROUTE = "no_route"
#: The Server header of every answer.
SERVER = "aiosvc"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Routes polled by supervisors and scrapers: their request lines are at debug, so that the
#: polls do not fill the journal.
QUIET_ROUTES = frozenset({"/health", "/api/v1/health", "/metrics"})
#: Routes whose requests last as long as a reply when asked to (``?wait=true``): like the
#: stream routes, they hold a place while they wait.
WAITING_ROUTES = frozenset(
    {("POST", "/api/v1/sessions/{id}/messages"), ("POST", "/api/v1/approvals")}
)

request_id = logs.request_id
#: The request's Origin when it is an allowed one (CORS headers go on its answer).
cors_origin: ContextVar[str] = ContextVar("cors_origin", default="")
#: The API key the request authenticated with (a ticket's: the key that asked for it); None
#: without keys.
credential: ContextVar[str | None] = ContextVar("credential", default=None)
#: The response a stream handler prepared: the status its request line shows when the handler
#: is cancelled (its client left) instead of returning it.
prepared_stream: ContextVar[web.StreamResponse | None] = ContextVar("prepared_stream", default=None)

# Generated ids: a random prefix per process and a counter: unique, and no system call per
# request (ids are for correlating log lines, not secrets). The counter starts at 2**32 so
# that hex() always has a leading "0x1" to cut off and eight digits after it.
_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count(1 << 32)


def new_request_id() -> str:
    """A fresh request id, 16 hex digits."""
    # (the cheapest formatting measured: this runs for every request)
    return _ID_PREFIX + hex(next(_id_counter))[3:]


class FrontDoor:
    """The checks every request passes before its handler: it gives the request an id, runs
    the checks, maps every failure to the error envelope, and writes the request's log line."""

    def __init__(
        self, limits: LimitsConfig, gate: AccessGate, metrics: Metrics | None = None
    ) -> None:
        self.gate = gate
        self.metrics = metrics or Metrics()
        self.max_body_bytes = limits.max_body_bytes
        # Writes are counted per API key; without keys, per connection (local clients all
        # come from 127.0.0.1: per address, one busy script would hold up every other).
        self.writes = RateLimiter(limits.write_rate_per_s, limits.write_burst)
        self.connection_writes = ConnectionRates(limits.write_rate_per_s, limits.write_burst)
        self.auth_failures = RateLimiter(limits.auth_failures_per_s, limits.auth_failure_burst)
        self.places = Places(_long_lived(limits), limits.max_streams_per_credential)
        self.refused = Throttled("stream_refused", level="warning", logger=log)

    def reconfigure(self, limits: LimitsConfig) -> None:
        """Apply new limits (a reload): requests and streams already open are not touched."""
        self.max_body_bytes = limits.max_body_bytes
        self.writes.reconfigure(limits.write_rate_per_s, limits.write_burst)
        self.connection_writes.reconfigure(limits.write_rate_per_s, limits.write_burst)
        self.auth_failures.reconfigure(limits.auth_failures_per_s, limits.auth_failure_burst)
        self.places.limit = _long_lived(limits)
        self.places.per_credential_limit = limits.max_streams_per_credential

    def add_routes(self, router: web.UrlDispatcher, tables: Iterable[web.RouteTableDef]) -> None:
        """Register every route of ``tables`` behind the door, then the catch-all.

        A route defined with ``public=True`` (``@routes.get("/health", public=True)``) needs
        no key. The router must be empty: a route registered before would skip every check (and one
        registered after is shadowed by the catch-all).
        """
        if len(router.resources()):
            raise RuntimeError(
                "the front door registers every route: this router already has routes, "
                "which no check would guard"
            )
        for table in tables:
            for definition in table:
                if not isinstance(definition, web.RouteDef):
                    raise TypeError(f"only routes go behind the front door: {definition!r}")
                self._add(router, definition)
        fallback = self.guard(self.no_route, None)
        # [\s\S], not ".": a path may hold an encoded newline (/x%0ay), which "." skips
        router.add_route(hdrs.METH_ANY, r"/{tail:[\s\S]*}", fallback, name=NO_ROUTE)

    def _add(self, router: web.UrlDispatcher, definition: web.RouteDef) -> None:
        """One route, through aiohttp's public API: its resource (the path's), then the
        guarded handler on it (with HEAD beside GET, as ``router.add_get`` does)."""
        options = dict(definition.kwargs)
        resource = router.add_resource(definition.path, name=options.pop("name", None))
        allow_head = options.pop("allow_head", True) and definition.method == hdrs.METH_GET
        if options.pop("public", False):
            methods = (definition.method, hdrs.METH_HEAD) if allow_head else (definition.method,)
            self.gate.public.update((method, resource.canonical) for method in methods)
        guarded = self.guard(definition.handler, resource.canonical, definition.method)
        if allow_head:
            resource.add_route(hdrs.METH_HEAD, guarded, **options)
        resource.add_route(definition.method, guarded, **options)

    def guard(self, handler: Handler, route: str | None, method: str = hdrs.METH_ANY) -> Handler:
        """``handler`` behind the door; ``route`` is its canonical path (None: no route)."""
        if route in STREAM_ROUTES:
            handler = self.long_lived(handler, waits_only=False)
        elif (method, route) in WAITING_ROUTES:
            handler = self.long_lived(handler, waits_only=True)
        level = "debug" if route in QUIET_ROUTES else "info"
        door = Door(route, logs.access_log(level), self.metrics.route(route))
        # A partial, not a wrapping coroutine: calling it makes serve's coroutine directly,
        # one coroutine a request instead of two.
        return functools.update_wrapper(functools.partial(self.serve, handler, door), handler)

    async def serve(self, handler: Handler, door: Door, request: web.Request) -> web.StreamResponse:
        """Run ``handler`` for ``request`` if it passes; answer, log and count it either way."""
        route = door.route
        headers = request.headers
        given = headers.get(REQUEST_ID_HEADER)
        rid = given if given is not None and _CLIENT_ID.fullmatch(given) else new_request_id()
        request_id.set(rid)
        started = perf_counter()
        response: web.StreamResponse | None = None
        allowed_origin = ""
        remote = request.remote
        client = remote or "unknown"
        gate = self.gate
        try:
            origin = headers.get(hdrs.ORIGIN)
            # Most requests of a local client carry nothing to check but a Host header seen
            # before (a GET with no Origin and no query, no keys configured): they skip the
            # gate's calls, which cost as much as the rest of the front door together.
            if (
                origin is not None
                or gate.keys
                or request.query_string
                or request.method in STATE_CHANGING
                or headers.get(hdrs.HOST) not in gate.hosts_seen
            ):
                preflight, allowed_origin = self._check(request, route, origin, client)
                if preflight is not None:
                    response = preflight
                    return preflight
            response = await handler(request)
        except AppError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                response = exc
                raise
            response = error_response(_from_http(exc))
        except Exception:
            log.exception("unhandled_error", method=request.method, path=request.path)
            response = error_response(
                AppError(
                    "the server failed to handle this request; quote the request id when "
                    "reporting it",
                    details={"request_id": rid},
                )
            )
        finally:
            if response is not None and not response.prepared:
                _stamp(response, rid, allowed_origin)
            elif response is None:
                # The handler was cancelled (its client left, or shutdown): a stream it had
                # started answered with its own status; anything else never answered.
                response = prepared_stream.get()
                if response is not None and not response.prepared:
                    response = None
            elapsed = perf_counter() - started
            status = response.status if response is not None else 499
            method = request.method
            door.log.write(
                rid,
                method,
                request.raw_path,  # as sent; the line redacts tokens and tickets
                route,
                status,
                int(elapsed * 1e6) / 1000,  # ms to the microsecond
                remote,
            )
            door.stats.observe(method, status, elapsed)
        return response

    def _check(
        self, request: web.Request, route: str | None, origin: str | None, client: str
    ) -> tuple[web.Response | None, str]:
        """Host, CORS preflight, Origin, credentials, write limits: the answer to a preflight
        (or None), and the request's origin when it is an allowed one."""
        gate = self.gate
        gate.check_host(request)
        allowed_origin = ""
        if origin is not None:
            preflight = gate.preflight(request)
            if preflight is not None:
                return preflight, ""
            if gate.check_origin(request, origin, route):
                allowed_origin = origin
                cors_origin.set(origin)  # (its default, "", stands for no origin)
        key = self._authenticate(request, route, client)
        if key is not None:
            credential.set(key)
        if request.method in STATE_CHANGING:
            self._check_write(request, key)
        return None, allowed_origin

    def _authenticate(self, request: web.Request, route: str | None, client: str) -> str | None:
        """The gate's check of credentials, throttled per client address: past a burst of
        failures, every request of that address that needs a key waits (429), so keys cannot
        be guessed quickly; a client that never fails pays one dictionary lookup."""
        gate = self.gate
        if not gate.keys or (request.method, route) in gate.public:
            return gate.authenticate(request, route)
        self.check_auth_failures(client)
        try:
            return gate.authenticate(request, route)
        except Unauthorized:
            self.auth_failures.take(client)
            raise

    def check_auth_failures(self, client: str) -> None:
        """Refuse (429) a client address past its burst of failed authentications (a wrong
        key, or a failed sign-in: ``POST /api/v1/login`` counts them here too)."""
        wait = self.auth_failures.wait(client)
        if wait:
            raise RateLimited(
                "too many failed authentications from this address: wait before trying again",
                headers={"Retry-After": str(math.ceil(wait))},
            )

    def _check_write(self, request: web.Request, key: str | None) -> None:
        """The write rate limit (of the key, else of the connection), then the body's type
        and declared size."""
        if key is not None:
            wait = self.writes.take(key)
        else:
            transport = request.transport  # (None: the client is gone, nothing to answer)
            wait = self.connection_writes.take(transport) if transport is not None else 0.0
        if wait:
            raise RateLimited(
                "too many writes: slow down", headers={"Retry-After": str(math.ceil(wait))}
            )
        params.check_body(request, self.max_body_bytes)

    def long_lived(self, handler: Handler, *, waits_only: bool) -> Handler:
        """``handler`` holding a place while it runs (``waits_only``: only when asked to
        wait, ``?wait=true``); refused when its credential's places, or all, are taken."""
        places = self.places

        async def held(request: web.Request) -> web.StreamResponse:
            if waits_only and not params.boolean(request, "wait"):
                return await handler(request)
            owner = credential.get()
            over = places.take(owner)
            if over is not None:
                raise self._no_place(over)
            try:
                return await handler(request)
            finally:
                places.give_back(owner)

        return functools.update_wrapper(held, handler)

    def _no_place(self, over: str) -> AppError:
        """The refusal of a long-lived request: 429 over its credential's limit, 503 when
        every place is taken."""
        places = self.places
        retry = {"Retry-After": "1"}
        if over == "credential":
            limit = places.per_credential_limit
            self.refused(reason="credential_limit", limit=limit)
            return AppError(
                "too many streams and waiting requests open with this credential: close some",
                code="too_many_streams",
                status=429,
                headers=retry,
                details={"limit": limit},
            )
        self.refused(reason="limit", limit=places.limit)
        return AppError(
            "too many streams and waiting requests open: try again later",
            code="too_many_streams",
            status=503,
            headers=retry,
            details={"limit": places.limit},
        )

    @staticmethod
    async def no_route(request: web.Request) -> web.StreamResponse:
        """No route has this path (404), or none takes this method on it (405)."""
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource.name != NO_ROUTE:
                allowed |= (await resource.resolve(request))[1]
        if not allowed:
            raise NotFound(f"no route matches {request.method} {request.path}")
        raise AppError(
            f"{request.method} is not allowed here",
            code="method_not_allowed",
            status=405,
            headers={"Allow": ",".join(sorted(allowed))},
            details={"allowed": sorted(allowed)},
        )


@attrs.frozen
class Door:
    """What the front door does per route, chosen when the route is registered."""

    route: str | None  # the canonical path (None: the catch-all)
    log: logs.AccessLog  # the request lines, at the route's level
    stats: RouteStats  # the route's request counts and durations


def _long_lived(limits: LimitsConfig) -> int:
    """The places long-lived requests may take in all (the connection cap as ``serve``
    applies it, less the reserve)."""
    cap, _ = descriptor_budget(limits.max_connections)
    return long_lived_places(cap, limits.reserved_connections)


def stamp(response: web.StreamResponse) -> None:
    """Give a stream its request id and CORS headers before the handler prepares it."""
    _stamp(response, request_id.get(), cors_origin.get())
    prepared_stream.set(response)


def _stamp(response: web.StreamResponse, rid: str, origin: str) -> None:
    headers = response.headers
    headers[REQUEST_ID_HEADER] = rid
    # Answers may carry what a key unlocked: no cache keeps them. And the Server header says
    # only what this is, not which Python and aiohttp versions to look up flaws for.
    headers[hdrs.SERVER] = SERVER
    if hdrs.CACHE_CONTROL not in headers:
        headers[hdrs.CACHE_CONTROL] = "no-store"
    if origin and hdrs.ACCESS_CONTROL_ALLOW_ORIGIN not in response.headers:
        response.headers.update(cors_headers(origin))


def _from_http(exc: web.HTTPException) -> AppError:
    """Translate aiohttp's own errors (a body over ``client_max_size``) into domain errors."""
    if exc.status == 413:
        return PayloadTooLarge("the request body is over the size limit")
    code = re.sub(r"[^a-z0-9]+", "_", exc.reason.lower()).strip("_") or "error"
    return AppError(exc.reason, code=code, status=exc.status)

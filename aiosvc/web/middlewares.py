"""The front door: request id and the canonical log line, the error envelope, request checks."""

from __future__ import annotations

import itertools
import math
import re
import secrets
import time
from contextvars import ContextVar

import structlog
from aiohttp import WSCloseCode, hdrs, web
from aiohttp.typedefs import Handler, Middleware

from aiosvc import logs
from aiosvc.config import LimitsConfig
from aiosvc.errors import (
    AppError,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    UnsupportedMediaType,
)
from aiosvc.web.limits import ConnectionCounter, RateLimiter
from aiosvc.web.responses import error_response
from aiosvc.web.security import STATE_CHANGING, Gate, cors_headers

log = structlog.get_logger("aiosvc.access")

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

request_id = logs.request_id
#: The request's Origin when it is an allowed one (CORS headers go on its answer).
cors_origin: ContextVar[str] = ContextVar("cors_origin", default="")

# Generated ids: a random prefix per process and a counter: unique, and no system call per
# request (ids are for correlating log lines, not secrets).
_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """A fresh request id, 16 hex digits."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


def front_door(limits: LimitsConfig, gate: Gate) -> Middleware:
    """The one middleware every request passes: it gives the request an id, runs the checks,
    maps every failure to the error envelope, and writes the request's one log line.

    One middleware calling plain functions, not one middleware per concern: each layer of
    middleware costs a coroutine and a partial per request, and this runs on every request.
    """

    max_body_bytes = limits.max_body_bytes
    writes = RateLimiter(limits.write_rate_per_s, limits.write_burst)
    connections = ConnectionCounter(limits.max_connections, limits.max_connections_per_client)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = given if given and _CLIENT_ID.fullmatch(given) else new_request_id()
        request_id.set(rid)
        started = time.perf_counter()
        response: web.StreamResponse | None = None
        origin = request.headers.get(hdrs.ORIGIN)
        cors_origin.set("")
        try:
            gate.check_host(request)
            if origin is not None:
                preflight = gate.preflight(request)
                if preflight is not None:
                    response = preflight
                    return preflight
                if gate.check_origin(request, origin):
                    cors_origin.set(origin)
            resource = request.match_info.route.resource
            key = gate.authenticate(request, resource.canonical if resource is not None else None)
            client = request.remote or "unknown"
            if request.method in STATE_CHANGING:
                wait = writes.take(key or client)
                if wait:
                    raise RateLimited(
                        "too many writes: slow down",
                        headers={"Retry-After": str(math.ceil(wait))},
                    )
            check_body(request, max_body_bytes)
            if not connections.enter(client):
                response = await _too_many(request)
                return response
            try:
                response = await handler(request)
            finally:
                connections.leave(client)
        except AppError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                response = exc
                raise
            response = error_response(_from_http(request, exc))
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
            _log_request(request, response, started)
        return response

    return middleware


async def _too_many(request: web.Request) -> web.StreamResponse:
    """Over a connection limit: 503, or for a WebSocket an upgrade closed with 1013."""
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        ws = web.WebSocketResponse()
        if ws.can_prepare(request).ok:
            await ws.prepare(request)
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too many connections")
            return ws
    raise Unavailable(
        "too many connections: try again later",
        code="too_many_connections",
        headers={"Retry-After": "1"},
    )


def _log_request(request: web.Request, response: web.StreamResponse | None, started: float) -> None:
    resource = request.match_info.route.resource
    logs.access(
        request_id=request_id.get(),
        method=request.method,
        path=request.path_qs,  # logs.access redacts tokens and tickets
        route=resource.canonical if resource is not None else None,
        # No response: the handler was cancelled (the client left, or shutdown).
        status=response.status if response is not None else 499,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        remote=request.remote,
    )


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, streams too, carries ``X-Request-ID``, and the
    CORS headers when an allowed origin asked."""
    rid = request_id.get()
    if rid:
        response.headers[REQUEST_ID_HEADER] = rid
    origin = cors_origin.get()
    if origin and hdrs.ACCESS_CONTROL_ALLOW_ORIGIN not in response.headers:
        response.headers.update(cors_headers(origin))


def _from_http(request: web.Request, exc: web.HTTPException) -> AppError:
    """Translate aiohttp's own errors (routing, body size) into domain errors."""
    if exc.status == 404:
        message = f"no route matches {request.method} {request.path}"
        return AppError(message, code="not_found", status=404)
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return AppError(
            f"{request.method} is not allowed here",
            code="method_not_allowed",
            status=405,
            headers={"Allow": allowed},
            details={"allowed": sorted(m for m in allowed.split(",") if m)},
        )
    if exc.status == 413:
        return PayloadTooLarge("the request body is over the size limit")
    code = re.sub(r"[^a-z0-9]+", "_", exc.reason.lower()).strip("_") or "error"
    return AppError(exc.reason, code=code, status=exc.status)


def check_body(request: web.Request, max_bytes: int) -> None:
    """Refuse a body that is not ``application/json`` (415) or is declared too large (413)."""
    if request.method in _BODY_METHODS and request.body_exists:
        charset = (request.charset or "utf-8").lower()
        if request.content_type != "application/json" or charset != "utf-8":
            raise UnsupportedMediaType(
                "a request body must be JSON sent as 'Content-Type: application/json'"
            )
        length = request.content_length
        if length is not None and length > max_bytes:
            raise PayloadTooLarge(f"the request body is over the limit of {max_bytes} bytes")

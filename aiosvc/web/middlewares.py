"""Middlewares: request id and the canonical log line, the error envelope, JSON-only bodies."""

from __future__ import annotations

import re
import secrets
import time
from contextvars import ContextVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from aiosvc.errors import AppError, PayloadTooLarge, UnsupportedMediaType
from aiosvc.web.responses import error_response

log = structlog.get_logger("aiosvc.access")

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SECRET_PARAMS = re.compile(r"(?i)\b(token|ticket|api_key)=[^&]*")

request_id: ContextVar[str] = ContextVar("request_id", default="")


def redact_query(path_qs: str) -> str:
    """Hide the values of secret query parameters in a path with its query string."""
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}=[redacted]", path_qs)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (the client's, when sane), and log one line when it ends."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _CLIENT_ID.fullmatch(given) else secrets.token_hex(8)
    request_id.set(rid)
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        log.info(
            "request",
            method=request.method,
            path=redact_query(request.path_qs),
            route=resource.canonical if resource is not None else None,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            remote=request.remote,
        )
        structlog.contextvars.unbind_contextvars("request_id")


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, streams too, carries ``X-Request-ID``."""
    rid = request_id.get()
    if rid:
        response.headers[REQUEST_ID_HEADER] = rid


@web.middleware
async def error_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the API's error envelope; a crash never shows a traceback."""
    try:
        return await handler(request)
    except AppError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http(request, exc))
    except Exception:
        rid = request_id.get()
        log.exception("unhandled_error", method=request.method, path=request.path)
        return error_response(
            AppError(
                "the server failed to handle this request; quote the request id when reporting it",
                details={"request_id": rid},
            )
        )


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


def json_bodies(max_bytes: int) -> Middleware:
    """Refuse a body that is not ``application/json`` (415) or is declared too large (413)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in _BODY_METHODS and request.body_exists:
            charset = (request.charset or "utf-8").lower()
            if request.content_type != "application/json" or charset != "utf-8":
                raise UnsupportedMediaType(
                    "a request body must be JSON sent as 'Content-Type: application/json'"
                )
            length = request.content_length
            if length is not None and length > max_bytes:
                raise PayloadTooLarge(f"the request body is over the limit of {max_bytes} bytes")
        return await handler(request)

    return middleware

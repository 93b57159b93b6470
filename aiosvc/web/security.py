"""Who may talk to the daemon: Host and Origin allowlists, CORS, API keys, and tickets.

Any web page the user visits can reach localhost, so the checks run in this order, before a
handler sees the request: the Host (DNS rebinding), a CORS preflight, the Origin of anything
that changes state or opens a WebSocket (cross-site requests and WebSocket hijacking), then
the credentials.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from aiohttp import hdrs, web
from multidict import CIMultiDict, istr

from aiosvc.clock import format_time
from aiosvc.config import HOST_RE, ServerConfig
from aiosvc.errors import Forbidden, Unauthorized

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The routes a browser opens without being able to set headers: they also take ?token/?ticket.
STREAM_ROUTES = frozenset(
    {
        "/api/v1/ws",
        "/api/v1/sessions/{id}/ws",
        "/api/v1/events",
        "/api/v1/sessions/{id}/events",
    }
)
#: Routes open without a key (liveness for supervisors and load balancers; the dashboard's
#: files, whose page signs in by itself).
OPEN_ROUTES = frozenset({"/health", "/", "/static/{name}"})
CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-API-Key, X-Request-ID"
CORS_METHODS = "DELETE, GET, OPTIONS, PATCH, POST"
TICKET_TTL_S = 60.0
#: Allowed Host headers remembered as such (one per name and port a client uses).
MAX_HOSTS_SEEN = 64


def host_name(host: str) -> str | None:
    """The name part of a Host header, lower-cased (``[::1]:8420`` -> ``[::1]``); None when
    it is not a well-formed host."""
    # Strictly: "[::1]evil.com", "127.0.0.1:evil" and " localhost" are not hosts.
    found = HOST_RE.fullmatch(host.lower())
    return found.group(1) if found else None


class AccessGate:
    """Applies the allowlists and credentials of the server's configuration."""

    def __init__(self, config: ServerConfig) -> None:
        self.tickets = Tickets()
        #: Host headers found allowed (only allowed ones): a request with one of them needs
        #: no Host check.
        self.hosts_seen: set[str] = set()
        self.reconfigure(config)

    def reconfigure(self, config: ServerConfig) -> None:
        """Apply the allowlists and keys of ``config`` (at start and on reload); tickets
        already issued stay valid."""
        named = (host_name(h) for h in config.allowed_hosts)  # the config checked each one
        self.hosts = LOOPBACK_HOSTS | {name for name in named if name is not None}
        self.origins = frozenset(o.rstrip("/").lower() for o in config.allowed_origins)
        self.keys = tuple(k.encode() for k in config.api_keys)
        self.hosts_seen.clear()  # a host seen before may no longer be allowed

    # Host and Origin ---------------------------------------------------------------------------

    def check_host(self, request: web.Request) -> None:
        """Refuse a Host that is not ours: a rebound DNS name points a web page at us."""
        host = request.headers.get(hdrs.HOST, "")
        if host in self.hosts_seen:  # the header clients send, the same on every request
            return
        if host_name(host) not in self.hosts:
            raise Forbidden(f"host {host!r} is not allowed", code="forbidden_host")
        if len(self.hosts_seen) < MAX_HOSTS_SEEN:
            self.hosts_seen.add(host)

    def origin_allowed(self, request: web.Request, origin: str) -> bool:
        """A configured origin, or the daemon's own (its dashboard), never ``null``."""
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        own = f"{request.scheme}://{request.headers.get(hdrs.HOST, '')}".lower()
        return origin == own

    def check_origin(self, request: web.Request, origin: str, route: str | None) -> bool:
        """Refuse a cross-site stream (WebSocket or SSE) or state-changing request from an
        unknown origin; tell whether the origin is allowed (its answers carry CORS headers).

        A foreign page cannot read an event stream it opens, but the daemon would still
        serve it for as long as the page stays open: refused like a WebSocket upgrade."""
        allowed = self.origin_allowed(request, origin)
        if not allowed and (
            request.method in STATE_CHANGING
            or route in STREAM_ROUTES
            or request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        ):
            raise Forbidden(f"origin {origin!r} is not allowed", code="forbidden_origin")
        return allowed

    def preflight(self, request: web.Request) -> web.Response | None:
        """Answer a CORS preflight: 204 for an allowed origin, 403 for any other."""
        origin = request.headers.get(hdrs.ORIGIN)
        asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
        if request.method != "OPTIONS" or origin is None or asked is None:
            return None
        if not self.origin_allowed(request, origin):
            raise Forbidden(f"origin {origin!r} is not allowed", code="forbidden_origin")
        headers = CIMultiDict(cors_headers(origin))
        headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = CORS_METHODS
        headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = CORS_HEADERS
        headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
        return web.Response(status=204, headers=headers)

    # Credentials -------------------------------------------------------------------------------

    def authenticate(self, request: web.Request, route: str | None) -> str | None:
        """Check the request's credentials; return the key it used (a ticket stands for the
        key that asked for it), or None when keys are off.

        Headers work everywhere; ``?token=`` and ``?ticket=`` only on the stream routes.
        """
        stream = route in STREAM_ROUTES
        query = request.rel_url.query if request.query_string else _NO_QUERY
        if not stream and ("token" in query or "ticket" in query):
            raise Unauthorized(
                "query credentials are accepted only by the WebSocket and event-stream routes",
                headers=_BEARER,
            )
        if not self.keys or route in OPEN_ROUTES:
            return None
        given = header_key(request)
        if given is not None and stream and query.get("token", given) != given:
            raise Unauthorized("the request carries two different API keys", headers=_BEARER)
        if given is None and stream:
            ticket = query.get("ticket")
            if ticket is not None:
                owner = self.tickets.redeem(ticket)
                if owner is not None:
                    return owner
                raise Unauthorized("the ticket is unknown, used or expired", headers=_BEARER)
            given = query.get("token")
        if given is None:
            raise Unauthorized("an API key is required", headers=_BEARER)
        if not self.known(given):
            raise Unauthorized("the API key is not valid", headers=_BEARER)
        return given

    def known(self, key: str) -> bool:
        """Compare with every configured key in constant time."""
        # aiohttp decodes header bytes that are not UTF-8 as surrogates: compare the bytes sent
        candidate = key.encode("utf-8", "surrogateescape")
        found = False
        for configured in self.keys:
            found |= hmac.compare_digest(candidate, configured)
        return found


_BEARER = {"WWW-Authenticate": "Bearer"}
API_KEY_HEADER = istr("X-API-Key")
_NO_QUERY: Mapping[str, str] = {}


def cors_headers(origin: str) -> Mapping[str, str]:
    """The CORS headers of an answer to an allowed origin (never ``*``)."""
    return {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: "X-Request-ID, Location, Retry-After",
        hdrs.VARY: "Origin",
    }


def header_key(request: web.Request) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer``; several that differ (two
    headers, or both kinds) are refused rather than one of them picked."""
    headers = request.headers
    given = {key for key in headers.getall(API_KEY_HEADER, ()) if key}
    for value in headers.getall(hdrs.AUTHORIZATION, ()):
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            given.add(token.strip())
    if len(given) > 1:
        raise Unauthorized("the request carries two different API keys", headers=_BEARER)
    return given.pop() if given else None


#: What a ticket issued without a key stands for (keys were configured by a reload since).
NO_KEY = "ticket"


class Tickets:
    """Single-use tickets for the stream routes, valid for :data:`TICKET_TTL_S`, each
    standing for the key that asked for it (a stream opened with it counts as that key's)."""

    def __init__(self) -> None:
        self._issued: dict[str, tuple[float, str]] = {}

    def issue(self, key: str | None) -> tuple[str, str]:
        """A new ticket for ``key`` and its expiry time (RFC 3339)."""
        self._prune()
        ticket = secrets.token_urlsafe(24)
        self._issued[ticket] = (time.monotonic() + TICKET_TTL_S, key or NO_KEY)
        return ticket, format_time(datetime.now(UTC) + timedelta(seconds=TICKET_TTL_S))

    def redeem(self, ticket: str) -> str | None:
        """Use a ticket up: the key it stands for, once, within its lifetime (else None)."""
        expires, key = self._issued.pop(ticket, (0.0, ""))
        return key if expires > time.monotonic() else None

    def _prune(self) -> None:
        now = time.monotonic()
        for ticket in [t for t, (e, _) in self._issued.items() if e <= now]:
            del self._issued[ticket]

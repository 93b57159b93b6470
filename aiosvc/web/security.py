"""Who may talk to the daemon: Host and Origin allowlists, CORS, API keys, and tickets.

Any web page the user visits can reach localhost, so the checks run in this order, before a
handler sees the request: the Host (DNS rebinding), a CORS preflight, the Origin of anything
that changes state or opens a WebSocket (cross-site requests and WebSocket hijacking), then
the credentials: a key in a header, a ticket or token on a stream's URL, or else the browser
login's cookie (:mod:`aiosvc.store.logins`), which must come with the daemon's own or an
allowed ``Origin`` on anything that changes state or opens a WebSocket (CSRF).
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
from aiosvc.store.logins import Login, Logins, key_id

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
#: The browser login's cookie.
COOKIE = "aiosvc_session"
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

    def __init__(self, config: ServerConfig, logins: Logins | None = None) -> None:
        self.tickets = Tickets()
        #: The browser logins (None: the cookie is not looked at).
        self.logins = logins
        #: The (method, canonical path) of the routes open without a key, marked so when the
        #: front door registers them (``/health``, the login routes, the dashboard's files).
        self.public: set[tuple[str, str]] = set()
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
        # Each key's fingerprint, as its logins store it: a login whose key is no longer
        # configured is refused.
        self.key_ids = {key_id(k): k for k in config.api_keys}
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
                headers=BEARER,
            )
        if not self.keys or (request.method, route) in self.public:
            return None
        given = header_key(request)
        if given is not None and stream and query.get("token", given) != given:
            raise Unauthorized("the request carries two different API keys", headers=BEARER)
        if given is None and stream:
            ticket = query.get("ticket")
            if ticket is not None:
                owner = self.tickets.redeem(ticket)
                if owner is not None:
                    return owner
                raise Unauthorized("the ticket is unknown, used or expired", headers=BEARER)
            given = query.get("token")
        if given is None:
            return self._by_cookie(request)
        if not self.known(given):
            raise Unauthorized("the API key is not valid", headers=BEARER)
        return given

    def _by_cookie(self, request: web.Request) -> str:
        """The key the request's login was made with; the login is refused (401) when it is
        unknown, expired or its key was removed, and a write or WebSocket without an allowed
        ``Origin`` is refused (403): the browser sends the cookie with requests other sites'
        pages make too."""
        token = request.cookies.get(COOKIE) if hdrs.COOKIE in request.headers else None
        if not token:
            raise Unauthorized("an API key is required", headers=BEARER)
        login = self.login(token)
        if login is None:
            raise Unauthorized("the login is unknown or expired: sign in again", headers=BEARER)
        self.check_cookie_origin(request)
        return self.key_ids[login.key_id]

    def login(self, token: str) -> Login | None:
        """The valid login of a cookie's token, now used (None: unknown, expired, or made
        with a key that is no longer configured)."""
        return None if self.logins is None else self.logins.use(token, self.key_ids)

    def check_cookie_origin(self, request: web.Request) -> None:
        """Refuse a write or a WebSocket upgrade that only the cookie authenticates unless it
        carries the daemon's own or an allowed ``Origin`` (the CSRF defence)."""
        if request.method not in STATE_CHANGING and (
            request.headers.get(hdrs.UPGRADE, "").lower() != "websocket"
        ):
            return
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or not self.origin_allowed(request, origin):
            raise Forbidden(
                "a write authenticated by the login cookie alone must carry the Origin of the "
                "daemon's own page or of an allowed one",
                code="forbidden_origin",
            )

    def known(self, key: str) -> bool:
        """Compare with every configured key in constant time."""
        # aiohttp decodes header bytes that are not UTF-8 as surrogates: compare the bytes sent
        candidate = key.encode("utf-8", "surrogateescape")
        found = False
        for configured in self.keys:
            found |= hmac.compare_digest(candidate, configured)
        return found


BEARER = {"WWW-Authenticate": "Bearer"}
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
        raise Unauthorized("the request carries two different API keys", headers=BEARER)
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

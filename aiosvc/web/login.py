"""Routes for the browser login: sign in with a key for a cookie, ask whether signed in, sign
out. The cookie itself is checked with every other credential, by the access gate."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import hdrs, web

from aiosvc.clock import format_time
from aiosvc.errors import Unauthorized
from aiosvc.web import params
from aiosvc.web.bodies import LoginCreate
from aiosvc.web.keys import ACCESS_GATE, FRONT_DOOR
from aiosvc.web.operation import operation
from aiosvc.web.responses import ok
from aiosvc.web.security import BEARER, COOKIE, header_key

routes = web.RouteTableDef()
LOGIN_STATE = {"authenticated": bool, "expires_at": str | None}


@routes.post("/api/v1/login", public=True)
@operation(body=LoginCreate, responses={204: None}, errors={429: "rate_limited"})
async def login(request: web.Request) -> web.Response:
    """Sign a browser in with an API key: 204 with the login's cookie (HttpOnly,
    SameSite=Strict); a wrong key is 401 and counts against the failed-sign-in throttle."""
    gate = request.app[ACCESS_GATE]
    client = request.remote or "unknown"
    if gate.keys:
        request.app[FRONT_DOOR].check_auth_failures(client)
    body = await params.body(request, LoginCreate)
    response = web.Response(status=204)
    if not gate.keys or gate.logins is None:
        return response  # nothing to sign in to: every request is let in
    if not gate.known(body.key):
        request.app[FRONT_DOOR].auth_failures.take(client)
        raise Unauthorized("the API key is not valid", headers=BEARER)
    token, _ = await gate.logins.create(body.key)
    response.set_cookie(
        COOKIE, token, path="/", httponly=True, samesite="Strict", secure=request.secure or None
    )
    return response


@routes.get("/api/v1/login", public=True)
@operation(responses={200: LOGIN_STATE})
async def login_state(request: web.Request) -> web.Response:
    """Whether the caller is signed in (by its cookie or a key), and when its login expires
    if unused (null for a key); 200 either way. Without keys every caller is."""
    gate = request.app[ACCESS_GATE]
    authenticated, expires_at = not gate.keys, None
    given = _header_key(request)
    if given is not None:
        authenticated = authenticated or gate.known(given)
    elif gate.keys and hdrs.COOKIE in request.headers:
        token = request.cookies.get(COOKIE)
        found = gate.login(token) if token else None
        if found is not None and gate.logins is not None:
            authenticated = True
            expires_at = format_time(datetime.fromtimestamp(gate.logins.expires_at(found), UTC))
    return ok({"authenticated": authenticated, "expires_at": expires_at})


@routes.post("/api/v1/logout", public=True)
@operation(responses={204: None})
async def logout(request: web.Request) -> web.Response:
    """Sign out: the cookie's login is revoked and the cookie cleared (204 even without one)."""
    gate = request.app[ACCESS_GATE]
    token = request.cookies.get(COOKIE) if hdrs.COOKIE in request.headers else None
    if token:
        if _header_key(request) is None:
            gate.check_cookie_origin(request)  # another site's page cannot sign the user out
        if gate.logins is not None:
            await gate.logins.revoke(token)
    response = web.Response(status=204)
    response.del_cookie(
        COOKIE, path="/", httponly=True, samesite="Strict", secure=request.secure or None
    )
    return response


def _header_key(request: web.Request) -> str | None:
    """The key of the request's headers; None for none, or for several that differ."""
    try:
        return header_key(request)
    except Unauthorized:
        return None

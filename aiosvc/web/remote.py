"""Sessions of other computers in the session routes: the merged lists, a remote session's
reads from the cache, its other requests forwarded to its computer (see :mod:`aiosvc.peers`).

A request from a peer (``X-Aiosvc-Peer``) is answered by this machine alone: never merged,
never forwarded, so two daemons peered both ways never ask each other in a circle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from aiosvc.errors import AppError, PeerUnavailable
from aiosvc.paging import Window
from aiosvc.peers.forward import forward
from aiosvc.peers.link import PEER_HEADER, PeerFailed, PeerLink
from aiosvc.peers.listing import merged_page
from aiosvc.peers.sessions import RemoteSession
from aiosvc.web.keys import CACHE, PEERS
from aiosvc.web.responses import JSON, cursor_page_body


def merging(request: web.Request) -> bool:
    """Whether this request's session lists and ids take in the peers'."""
    return bool(request.app[PEERS].links) and PEER_HEADER not in request.headers


async def merged_list(
    request: web.Request, filters: dict[str, str], window: Window
) -> web.Response | None:
    """The merged page of sessions, or None when the list is this machine's alone (its
    ``computer`` filter names no peer)."""
    peers = request.app[PEERS]
    computer = filters.get("computer")
    if computer is not None and peers.get(computer) is None:
        return None
    lists = await peers.lists(only=computer)
    wanted = {k: v for k, v in filters.items() if k != "computer"}
    memo = request.app[MERGED]
    key: object = (
        request.app[CACHE].sessions_changed,
        tuple((link.name, kept.changes, link.online) for link, kept in lists),
        window,
        tuple(sorted(filters.items())),
    )
    if memo.key != key:  # built once per change of any list (dashboards poll the same page)
        page = merged_page(request.app[CACHE], lists, wanted, window, local=computer is None)
        memo.body = cursor_page_body(page, limit=window.limit)
        memo.key = key
    return web.Response(body=memo.body, content_type=JSON)


class MergedMemo:
    """The last merged page's body and what it was built from."""

    def __init__(self) -> None:
        self.key: object = None
        self.body = b""


MERGED = web.AppKey("merged", MergedMemo)


def remote_session(request: web.Request) -> tuple[PeerLink, RemoteSession] | None:
    """The remote session the route's ``{id}`` names (when it is not this machine's)."""
    session_id = request.match_info["id"]
    if not merging(request) or request.app[CACHE].session(session_id) is not None:
        return None
    return request.app[PEERS].find(session_id)


async def forwarded_write(
    request: web.Request, found: tuple[PeerLink, RemoteSession]
) -> web.Response:
    """Forward a write to a remote session's computer (see :func:`forwarded`); its list is
    fetched again after it."""
    link, session = found
    answer = await forwarded(request, link)
    if 200 <= answer.status < 300:
        link.written(session.id, deleted=request.method == "DELETE")
    return answer


async def forwarded_approval(request: web.Request) -> web.Response | None:
    """Offer a decision on an approval this machine does not know to each peer in turn: the
    first that knows it answers (None: none does; ``503 peer_unavailable`` if one that might
    could not be asked)."""
    if not merging(request):
        return None
    unreachable: PeerUnavailable | None = None
    body = await request.read()
    for link in request.app[PEERS].links.values():
        try:
            answer = await forward(
                link, "POST", request.rel_url.path_qs, body, request.headers.get("Content-Type")
            )
        except PeerUnavailable as failed:
            unreachable = failed
            continue
        if answer.status != 404:
            link.written("", deleted=False)
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
    if unreachable is not None:
        raise unreachable
    return None


async def peers_approvals(
    request: web.Request, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """The approvals each peer lists (its newest ``limit``, of ``status`` if given); a peer
    known to be offline, or that fails to answer within the poll timeout, is left out (as its
    sessions are shown stale)."""
    params = {"limit": str(limit)} | ({"status": status} if status else {})

    async def asked(link: PeerLink) -> Any:
        try:
            return await link.get_json("/api/v1/approvals", params)
        except PeerFailed as failed:
            link.went_offline(failed.info)  # (later reads leave it out until it answers)
            return None

    links = [link for link in request.app[PEERS].links.values() if not link.known_offline()]
    found: list[dict[str, Any]] = []
    for answer in await asyncio.gather(*map(asked, links)):
        listed = answer.get("data") if isinstance(answer, dict) else None
        if isinstance(listed, list):
            found.extend(a for a in listed if isinstance(a, dict))
    return found


def remote_in(app: web.Application, session_id: str) -> tuple[PeerLink, RemoteSession] | None:
    """The remote session ``session_id`` names, if it is not this machine's (for ops)."""
    if not app[PEERS].links or app[CACHE].session(session_id) is not None:
        return None
    return app[PEERS].find(session_id)


async def forwarded_op(
    link: PeerLink, path: str, body: Mapping[str, object] | None = None
) -> object:
    """POST ``path`` to the peer for a WebSocket op: the ``data`` of its answer, or its error
    raised as this daemon's (code, status, message and details kept)."""
    payload = orjson.dumps(body) if body is not None else None
    answer = await forward(link, "POST", path, payload, "application/json" if payload else None)
    try:
        parsed = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise PeerUnavailable(
            f"the computer {link.name!r} answered {answer.status} without JSON",
            details={"computer": link.name},
        )
    if answer.status >= 400:
        found = parsed.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        raise AppError(
            str(error.get("message", "the peer refused")),
            code=str(error.get("code", "internal_error")),
            status=answer.status,
            details=error.get("details") if isinstance(error.get("details"), dict) else None,
        )
    return parsed.get("data")


async def forwarded_approval_op(
    app: web.Application, approval_id: str, decision: str, remember: str | None = None
) -> object:
    """A decision on an approval this machine does not know, offered to each peer in turn
    (see :func:`forwarded_approval`); None if none knows it."""
    unreachable: PeerUnavailable | None = None
    body = {"decision": decision} | ({"remember": remember} if remember is not None else {})
    for link in app[PEERS].links.values():
        try:
            return await forwarded_op(link, f"/api/v1/approvals/{approval_id}", body)
        except PeerUnavailable as failed:
            unreachable = failed
        except AppError as refused:
            if refused.status != 404:
                raise
    if unreachable is not None:
        raise unreachable
    return None


async def forwarded(request: web.Request, link: PeerLink) -> web.Response:
    """Send the request to ``link``'s computer as it came; answer as it answered."""
    body = await request.read() if request.can_read_body else None
    answer = await forward(
        link,
        request.method,
        request.rel_url.path_qs,
        body,
        request.headers.get("Content-Type") if body is not None else None,
    )
    headers: Mapping[str, str] = answer.headers
    return web.Response(status=answer.status, body=answer.body, headers=headers)

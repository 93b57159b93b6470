"""Requests about a remote session forwarded to its computer: sent as the client sent them
(method, path, query, body) with the caller's request id, answered with the peer's status and
body, its errors keeping their codes."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import attrs

from aiosvc import logs
from aiosvc.errors import PeerUnavailable
from aiosvc.models import ErrorInfo
from aiosvc.peers.link import POLL_TIMEOUT_S, PeerLink

#: How long a forwarded request may take (a write waits for the peer's answer, which may wait
#: for its agent: ``?wait=``).
FORWARD_TIMEOUT_S = 60.0
#: The peer's answer headers passed on to the client.
PASSED_ON = ("Content-Type", "Location", "Retry-After")


@attrs.frozen(kw_only=True)
class Forwarded:
    """The peer's answer: what the client gets."""

    status: int
    body: bytes
    headers: Mapping[str, str]


async def forward(
    link: PeerLink,
    method: str,
    path_qs: str,
    body: bytes | None = None,
    content_type: str | None = None,
) -> Forwarded:
    """Send the request to the peer; its answer, or ``503 peer_unavailable`` if it cannot be
    reached (then it is marked offline)."""
    if not link.online and not link.due():
        raise PeerUnavailable(
            f"the computer {link.name!r} is offline", details={"computer": link.name}
        )
    headers = link.headers()
    rid = logs.request_id.get()
    if rid:
        headers["X-Request-ID"] = rid
    if content_type is not None:
        headers["Content-Type"] = content_type
    # (a machine that is off or asleep is told within the poll's timeout, not the answer's)
    timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S, sock_connect=POLL_TIMEOUT_S)
    try:
        async with link.http().request(
            method, link.url + path_qs, data=body, headers=headers, timeout=timeout
        ) as response:
            answer = await response.read()
            passed = {h: response.headers[h] for h in PASSED_ON if h in response.headers}
            link.seen()
            return Forwarded(status=response.status, body=answer, headers=passed)
    except (aiohttp.ClientError, TimeoutError) as exc:
        link.went_offline(ErrorInfo(code="peer_unreachable", message=str(exc) or "no answer"))
        raise PeerUnavailable(
            f"the computer {link.name!r} cannot be reached", details={"computer": link.name}
        ) from exc

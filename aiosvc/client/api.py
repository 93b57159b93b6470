"""The few REST calls the terminal client makes, and how their failures are told apart."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

#: Bound on one REST call; the WebSocket has its own heartbeat.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15.0)


class ApiError(Exception):
    """The server answered with an error envelope (or something that is not the API)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Unreachable(Exception):
    """No answer from the server: refused, timed out, or the connection broke."""


def check_base_url(url: str) -> str:
    """Return ``url`` without a trailing slash; ValueError unless it is an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the URL must not have a query or fragment: {url!r}")
    return url.rstrip("/")


def describe(exc: BaseException) -> str:
    """A short reason for a connection failure, for a person to read."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        # asyncio words a refused connection "Connect call failed (addr)"; errno says it plainly
        if isinstance(error, ConnectionError) and error.errno:
            reason = os.strerror(error.errno)
        else:
            reason = error.strerror or str(error)
        return reason[:1].lower() + reason[1:]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


class Api:
    """REST calls on one server, authenticated with ``X-API-Key`` when a key is given."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, api_key: str | None) -> None:
        self.http = http
        self.base_url = base_url
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._api_key = api_key

    def session_path(self, session_id: str) -> str:
        """The path of one session's resource (the id quoted, whatever it holds)."""
        return f"/api/v1/sessions/{quote(session_id, safe='')}"

    def ws_url(self, session_id: str) -> str:
        """The session's WebSocket URL, with ``?token=`` when a key is given (no headers there)."""
        return self.stream_url(self.session_path(session_id) + "/ws")

    def stream_url(self, path: str) -> str:
        """The URL of a stream route, with ``?token=`` when a key is given."""
        url = self.base_url + path
        if self._api_key:
            url += "?token=" + quote(self._api_key, safe="")
        return url

    async def call(
        self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Make one call and return the decoded success body; raise ApiError or Unreachable."""
        try:
            async with self.http.request(
                method,
                self.base_url + path,
                json=body,
                params=params,
                headers=self._headers,
                timeout=REQUEST_TIMEOUT,
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise Unreachable(describe(exc)) from exc
        if status == 204:
            return {}  # (a deletion: no body)
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise ApiError(status, "bad_response", f"HTTP {status} with a body that is not JSON")
        if status >= 400:
            error = decoded.get("error")
            if isinstance(error, dict):
                code = str(error.get("code", "error"))
                raise ApiError(status, code, str(error.get("message", "")))
            raise ApiError(status, "error", f"HTTP {status}")
        return decoded

    async def create_session(self, agent: str | None, title: str | None) -> dict[str, Any]:
        """Create a session; return it."""
        body = {k: v for k, v in (("agent", agent), ("title", title)) if v is not None}
        data: dict[str, Any] = (await self.call("POST", "/api/v1/sessions", body=body))["data"]
        return data

    async def session(self, session_id: str) -> dict[str, Any]:
        """One session (ApiError 404 when there is none)."""
        data: dict[str, Any] = (await self.call("GET", self.session_path(session_id)))["data"]
        return data

    async def recent_messages(self, session_id: str, count: int = 20) -> list[dict[str, Any]]:
        """The last ``count`` messages of a session's history, oldest first."""
        path = self.session_path(session_id) + "/messages"
        page = await self.call("GET", path, params={"limit": str(count)})
        total = int(page.get("total", 0))
        if total > count:
            params = {"limit": str(count), "offset": str(total - count)}
            page = await self.call("GET", path, params=params)
        messages: list[dict[str, Any]] = page["data"]
        return messages[-count:]

    async def pending_approvals(self, session_id: str) -> list[dict[str, Any]]:
        """The session's approvals still waiting for a decision, oldest first."""
        params = {"session_id": session_id, "status": "pending", "limit": "100"}
        page = await self.call("GET", "/api/v1/approvals", params=params)
        approvals: list[dict[str, Any]] = page["data"]
        return sorted(approvals, key=lambda a: str(a.get("created_at", "")))

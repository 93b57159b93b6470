"""Calls the end-to-end tests make on a real ``aiosvc serve``, answering status and body."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.serving import Server


class Api:
    """The calls these tests make, answering (status, body)."""

    def __init__(self, http: aiohttp.ClientSession, server: Server) -> None:
        self.http = http
        self.server = server

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; the answer's status and JSON body."""
        url = self.server.url + path
        async with self.http.request(method, url, json=body) as response:
            return response.status, await response.json()

    async def session(self) -> str:
        """Create a session and return its id."""
        status, body = await self.call("POST", "/api/v1/sessions", {})
        assert status == 201, body
        session_id: str = body["data"]["id"]
        return session_id

    async def session_for(self, agent: str) -> str:
        """Create a session of ``agent`` and return its id."""
        status, body = await self.call("POST", "/api/v1/sessions", {"agent": agent})
        assert status == 201, body
        session_id: str = body["data"]["id"]
        return session_id

    async def send(self, session_id: str, content: str) -> dict[str, Any]:
        """Send a message (202); return the answer's data."""
        status, body = await self.call(
            "POST", f"/api/v1/sessions/{session_id}/messages", {"content": content}
        )
        assert status == 202, body
        data: dict[str, Any] = body["data"]
        return data

    async def messages(self, session_id: str) -> list[dict[str, Any]]:
        """A session's history."""
        status, body = await self.call("GET", f"/api/v1/sessions/{session_id}/messages?limit=500")
        assert status == 200, body
        found: list[dict[str, Any]] = body["data"]
        return found

    async def until(self, method: str, path: str, status: int, timeout: float = 20) -> Any:
        """Repeat a request until it answers ``status``; return that answer's body."""
        async with asyncio.timeout(timeout):
            while True:
                got, body = await self.call(method, path)
                if got == status:
                    return body
                await asyncio.sleep(0.1)

    async def replies(self, session_id: str, status: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until ``count`` assistant messages have ``status``; return them."""
        async with asyncio.timeout(30):
            while True:
                found = [
                    m
                    for m in await self.messages(session_id)
                    if m["role"] == "assistant" and m["status"] == status
                ]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.05)


async def wait_for_log(server: Server, text: str, timeout: float = 20) -> None:
    """Wait until the server's log holds ``text``."""
    async with asyncio.timeout(timeout):
        while text not in server.log():
            await asyncio.sleep(0.05)

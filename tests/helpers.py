"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]

#: An API time: RFC 3339, UTC, milliseconds.
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SESSION_KEYS = frozenset(
    {
        "id",
        "title",
        "agent",
        "project",
        "computer",
        "status",
        "created_at",
        "updated_at",
        "message_count",
        "last_message_at",
        "model",
        "system_prompt",
    }
)
MESSAGE_KEYS = frozenset(
    {"id", "session_id", "role", "content", "status", "created_at", "completed_at", "error"}
)


async def create_session(client: Client, **body: Any) -> dict[str, Any]:
    """Create a session through the API and return it."""
    response = await client.post("/api/v1/sessions", json=body)
    assert response.status == 201, await response.text()
    data: dict[str, Any] = (await response.json())["data"]
    return data


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds, failing after a generous ``timeout``."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)

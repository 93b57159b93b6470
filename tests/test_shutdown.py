"""Graceful stop of a real ``aiosvc serve``: running replies finish within the bound or end
``interrupted``, and queued ones run after the restart."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.serving import Server, slow_echo_config

INTERRUPTED = {
    "code": "interrupted",
    "message": "the server stopped before the reply finished",
}


class Api:
    """The few calls these tests make, on one server."""

    def __init__(self, http: aiohttp.ClientSession, server: Server) -> None:
        self.http = http
        self.url = server.url + "/api/v1"

    async def get(self, path: str) -> Any:
        """GET ``path`` and return the answer's ``data``."""
        async with self.http.get(self.url + path) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["data"]

    async def create_session(self) -> str:
        """Create a session on the default agent and return its id."""
        async with self.http.post(self.url + "/sessions", json={}) as response:
            assert response.status == 201, await response.text()
            data = (await response.json())["data"]
            assert data["agent"] == "slow"
            session_id: str = data["id"]
            return session_id

    async def send(self, session_id: str, content: str) -> dict[str, Any]:
        """Send a message with a plain POST (202) and return the answer's ``data``."""
        url = f"{self.url}/sessions/{session_id}/messages"
        async with self.http.post(url, json={"content": content}) as response:
            assert response.status == 202, await response.text()
            data: dict[str, Any] = (await response.json())["data"]
            return data

    async def messages(self, session_id: str) -> list[dict[str, Any]]:
        """The session's history, oldest first."""
        found: list[dict[str, Any]] = await self.get(f"/sessions/{session_id}/messages?limit=500")
        return found

    async def reply(self, session_id: str, reply_id: str) -> dict[str, Any] | None:
        """The reply message, if it exists yet."""
        return next((m for m in await self.messages(session_id) if m["id"] == reply_id), None)

    async def wait_until(
        self, predicate: Callable[[], Awaitable[bool]], timeout: float = 30
    ) -> None:
        """Poll the async ``predicate`` until it holds, within a generous ``timeout``."""
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.02)


def log_events(server: Server) -> list[dict[str, Any]]:
    """The server's JSON log lines so far."""
    return [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]


async def start(servers: list[Server], db: Path, config: Path) -> Server:
    """Start a server on ``db`` with ``config`` and register it for cleanup."""
    server = Server(db, config=config)
    servers.append(server)
    await server.start()
    return server


async def test_a_running_reply_finishes_within_the_shutdown_timeout(
    tmp_path: Path, db_path: Path, servers: list[Server]
) -> None:
    config = slow_echo_config(tmp_path, shutdown_timeout_s=10, delay_ms=150)
    text = "one two three four five six seven eight"  # eight deltas, 150 ms apart
    server = await start(servers, db_path, config)
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.create_session()
        sent = await api.send(session_id, text)
        code = await server.stop(signal.SIGTERM, timeout=60)  # at once: the reply is running
    assert code == 0
    events = log_events(server)
    names = [e["event"] for e in events]
    assert "replies_interrupted" not in names
    assert names[-1] == "service_stopped"
    stopping_at = next(e["timestamp"] for e in events if e["event"] == "stopping")

    restarted = await start(servers, db_path, config)
    async with aiohttp.ClientSession() as http:
        api = Api(http, restarted)
        reply = await api.reply(session_id, sent["reply_id"])
        assert reply is not None
        assert reply["role"] == "assistant"
        assert reply["status"] == "complete"
        assert reply["content"] == text
        assert reply["error"] is None
        assert reply["completed_at"] > stopping_at  # it finished after the stop began
        command = await api.get(f"/commands/{sent['command_id']}")
        assert command["status"] == "succeeded"
        assert command["error"] is None
        assert command["result"] == {"message_id": sent["reply_id"], "status": "complete"}
        assert (await api.get(f"/sessions/{session_id}"))["status"] == "idle"
        history = await api.messages(session_id)
        assert [(m["role"], m["status"], m["content"]) for m in history] == [
            ("user", "complete", text),
            ("assistant", "complete", text),
        ]
    assert await restarted.stop() == 0


async def test_a_reply_over_the_timeout_is_interrupted_and_the_queued_one_runs_after_restart(
    tmp_path: Path, db_path: Path, servers: list[Server]
) -> None:
    config = slow_echo_config(tmp_path, shutdown_timeout_s=0.5, delay_ms=2000)
    long_text = "alpha beta gamma delta"  # four deltas, 2 s apart: far over the timeout
    server = await start(servers, db_path, config)
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.create_session()
        first = await api.send(session_id, long_text)

        async def running() -> bool:
            session = await api.get(f"/sessions/{session_id}")
            return bool(session["status"] == "running")

        await api.wait_until(running)
        second = await api.send(session_id, "omega")  # queued behind the running reply
        code = await server.stop(signal.SIGTERM, timeout=15)
    assert code == 0
    events = log_events(server)
    interrupted = [e for e in events if e["event"] == "replies_interrupted"]
    assert [e["count"] for e in interrupted] == [1]
    assert events[-1]["event"] == "service_stopped"

    restarted = await start(servers, db_path, config)
    async with aiohttp.ClientSession() as http:
        api = Api(http, restarted)

        async def second_done() -> bool:
            reply = await api.reply(session_id, second["reply_id"])
            return reply is not None and reply["status"] == "complete"

        await api.wait_until(second_done)
        history = await api.messages(session_id)
        by_id = {m["id"]: m for m in history}
        cut = by_id[first["reply_id"]]
        assert cut["status"] == "failed"
        assert cut["error"] == INTERRUPTED
        assert cut["completed_at"] is not None
        assert long_text.startswith(cut["content"])
        assert cut["content"] != long_text
        done = by_id[second["reply_id"]]
        assert done["content"] == "omega"
        assert done["error"] is None
        assert [(m["id"], m["role"], m["status"]) for m in history] == [
            (first["message"]["id"], "user", "complete"),
            (first["reply_id"], "assistant", "failed"),
            (second["message"]["id"], "user", "complete"),
            (second["reply_id"], "assistant", "complete"),
        ]
        first_command = await api.get(f"/commands/{first['command_id']}")
        assert first_command["status"] == "failed"
        assert first_command["error"] == INTERRUPTED
        assert first_command["result"] == {"message_id": first["reply_id"], "status": "failed"}
        second_command = await api.get(f"/commands/{second['command_id']}")
        assert second_command["status"] == "succeeded"

        async def idle() -> bool:
            session = await api.get(f"/sessions/{session_id}")
            return bool(session["status"] == "idle")

        await api.wait_until(idle)
        assert (await api.get(f"/sessions/{session_id}"))["message_count"] == 4
    assert await restarted.stop() == 0

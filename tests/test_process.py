"""End to end against a real ``aiosvc serve`` process: crash safety and graceful stop."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.serving import Server


async def test_every_acknowledged_message_survives_sigkill(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    acknowledged: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(raise_for_status=False) as http:
        async with http.post(server.url + "/api/v1/sessions", json={}) as response:
            session_id = (await response.json())["data"]["id"]
        url = f"{server.url}/api/v1/sessions/{session_id}/messages"

        async def sender(worker: int) -> None:
            for n in range(10_000):
                try:
                    async with http.post(url, json={"content": f"w{worker}-{n}"}) as response:
                        if response.status == 202:
                            acknowledged.append((await response.json())["data"])
                except aiohttp.ClientError:
                    return

        senders = [asyncio.create_task(sender(w)) for w in range(8)]
        while len(acknowledged) < 300:
            await asyncio.sleep(0.01)
        server.kill()  # mid-burst: requests are in flight
        await asyncio.gather(*senders)
    count = len(acknowledged)
    assert count >= 300

    restarted = Server(db_path, port=server.port)
    await restarted.start()
    try:
        async with aiohttp.ClientSession() as http:
            history: list[dict[str, Any]] = []
            offset = 0
            while True:
                async with http.get(f"{url}?limit=500&offset={offset}") as response:
                    page = await response.json()
                history += page["data"]
                offset += 500
                if offset >= page["total"]:
                    break
            stored = {m["id"]: m for m in history}
            for data in acknowledged:
                message = data["message"]
                assert stored[message["id"]]["content"] == message["content"]

            # Every accepted reply gets its turn after the restart (they were journaled). The
            # session is idle also for the moment before its lane starts the first of them, so
            # wait until every acknowledged reply is in the history and none is running.
            expected = {data["reply_id"] for data in acknowledged}

            async def all_done() -> bool:
                async with http.get(f"{server.url}/api/v1/sessions/{session_id}") as response:
                    if (await response.json())["data"]["status"] != "idle":
                        return False
                seen: dict[str, str] = {}
                offset = 0
                while True:
                    async with http.get(f"{url}?limit=500&offset={offset}") as response:
                        page = await response.json()
                    seen |= {m["id"]: m["status"] for m in page["data"]}
                    offset += 500
                    if offset >= page["total"]:
                        break
                running = {"pending", "streaming"} & set(seen.values())
                return expected <= seen.keys() and not running

            async with asyncio.timeout(60):
                while not await all_done():
                    await asyncio.sleep(0.05)
            async with http.get(f"{url}?limit=500&offset=0") as response:
                total = (await response.json())["total"]
            history = []
            for offset in range(0, total, 500):
                async with http.get(f"{url}?limit=500&offset={offset}") as response:
                    history += (await response.json())["data"]
            # Nothing is left streaming: a reply the crash cut short is failed, the rest ran.
            statuses = {m["status"] for m in history if m["role"] == "assistant"}
            assert statuses <= {"complete", "failed"}
            failed = [m for m in history if m["status"] == "failed"]
            assert all(m["error"]["code"] == "interrupted" for m in failed)
            assert len(failed) <= 1  # one session: at most one reply was running
            replies = {m["id"] for m in history if m["role"] == "assistant"}
            assert {data["reply_id"] for data in acknowledged} <= replies
    finally:
        assert await restarted.stop() == 0


async def test_sigterm_stops_gracefully_and_exits_zero(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/v1/sessions", json={}) as response:
            session_id = (await response.json())["data"]["id"]
        async with http.post(
            f"{server.url}/api/v1/sessions/{session_id}/messages?wait=true",
            json={"content": "before stop"},
        ) as response:
            assert response.status == 200
    assert await server.stop(signal.SIGTERM) == 0
    lines = [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "service_started" in events
    assert events[-1] == "service_stopped"
    request_lines = [line for line in lines if line["event"] == "request"]
    assert {"request_id", "method", "route", "status", "duration_ms"} <= set(request_lines[0])


async def test_sigint_stops_gracefully_too(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    assert await server.stop(signal.SIGINT) == 0

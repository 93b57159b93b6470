"""Stats and computers through a real ``aiosvc serve``: the numbers of what the test created
(sessions, messages, replies, failed replies of a failing command agent), the range of days
and its bad values, this machine in ``/computers``, and the routes in the API document."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from tests.serving import Server
from tests.test_projects_process import API, call, new_session


@pytest.fixture
async def server(tmp_path: Path, db_path: Path) -> AsyncIterator[Server]:
    """A server with an agent whose replies always fail."""
    config = tmp_path / "aiosvc.toml"
    config.write_text('[agents.broken]\nkind = "command"\nargv = ["false"]\n')
    running = Server(db_path, config=config)
    await running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        assert await running.stop() == 0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_stats_count_what_was_created(server: Server, http: aiohttp.ClientSession) -> None:
    echo = [await new_session(http, server) for _ in range(2)]
    broken = await new_session(http, server, agent="broken")
    replies = []
    for session, count in ((echo[0], 2), (echo[1], 1), (broken, 2)):
        for n in range(count):
            status, reply = await call(
                http,
                "POST",
                server.url + API + f"/sessions/{session['id']}/messages?wait=true",
                json={"content": f"message {n}"},
            )
            assert status == 200, reply
            replies.append(reply["data"]["status"])
    assert replies == ["complete"] * 3 + ["failed"] * 2
    status, body = await call(http, "GET", server.url + API + "/stats?days=7")
    assert status == 200
    stats = body["data"]
    assert set(stats) == {"totals", "per_day", "per_agent"}
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(6, -1, -1)]
    assert [d["date"] for d in stats["per_day"]] == [d.isoformat() for d in days]
    zero = {
        "sessions": 0,
        "messages": 0,
        "replies": 0,
        "failed": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    created = {**zero, "sessions": 3, "messages": 10, "replies": 5, "failed": 2}
    assert stats["per_day"][:6] == [{"date": d.isoformat(), **zero} for d in days[:6]]
    assert stats["per_day"][6] == {"date": today.isoformat(), **created}
    assert stats["totals"] == created
    [by_broken, by_echo] = stats["per_agent"]
    assert by_broken == {"agent": "broken", "replies": 2, "failed": 2, "p50_reply_s": None}
    assert (by_echo["agent"], by_echo["replies"], by_echo["failed"]) == ("echo", 3, 0)
    assert isinstance(by_echo["p50_reply_s"], float) and 0 <= by_echo["p50_reply_s"] < 30
    # the default range is 30 days; the longest 366
    status, body = await call(http, "GET", server.url + API + "/stats")
    assert len(body["data"]["per_day"]) == 30 and body["data"]["totals"] == created
    status, body = await call(http, "GET", server.url + API + "/stats?days=366")
    assert status == 200 and len(body["data"]["per_day"]) == 366
    assert date.fromisoformat(body["data"]["per_day"][0]["date"]) == today - timedelta(days=365)
    for bad, problem in [
        ("0", "must be 1 to 366"),
        ("367", "must be 1 to 366"),
        ("-1", "must be 1 to 366"),
        ("ten", "must be an integer"),
        ("", "must be an integer"),
    ]:
        assert await call(http, "GET", server.url + API + f"/stats?days={bad}") == (
            400,
            {
                "error": {
                    "code": "invalid_parameter",
                    "message": f"query parameter 'days': {problem}",
                    "status": 400,
                    "details": {"parameter": "days"},
                }
            },
        ), bad


async def test_computers_list_this_machine(server: Server, http: aiohttp.ClientSession) -> None:
    sessions = [await new_session(http, server) for _ in range(3)]
    _, health = await call(http, "GET", server.url + "/health")
    status, body = await call(http, "GET", server.url + API + "/computers")
    assert status == 200
    [here] = body["data"]
    seen = here.pop("last_seen_at")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", seen)
    assert here == {
        "name": sessions[0]["computer"],
        "url": server.url,
        "local": True,
        "status": "online",
        "version": health["data"]["version"],
        "session_count": 3,
    }
    assert (body["total"], body["limit"], body["offset"]) == (1, 50, 0)
    status, body = await call(http, "GET", server.url + API + "/computers?limit=0")
    assert (status, body["error"]["code"]) == (400, "invalid_parameter")


async def test_the_api_document_describes_the_routes(
    server: Server, http: aiohttp.ClientSession
) -> None:
    status, document = await call(http, "GET", server.url + API + "/openapi.json")
    assert status == 200
    for path in ("/api/v1/computers", "/api/v1/projects", "/api/v1/todos", "/api/v1/stats"):
        assert set(document["paths"][path]) == {"get"}, path
    todos = document["paths"]["/api/v1/todos"]["get"]
    assert {p["name"] for p in todos["parameters"]} >= {"project", "all", "limit", "offset"}
    stats = document["paths"]["/api/v1/stats"]["get"]
    [days] = stats["parameters"]
    assert days["schema"]["minimum"] == 1 and days["schema"]["maximum"] == 366

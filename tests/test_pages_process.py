"""Pages, limits and memory through a real ``aiosvc serve``: keyset and offset pages of
histories and session lists, the hook event size limit, the resume window by bytes, and memory
that stays within its budget however much is posted and read."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import installed
from tests.process_api import Api
from tests.serving import Server
from tests.test_streams_process import vm_rss_kib

NOW = "2026-12-01T10:00:00.000Z"


def build(
    db: Path, histories: dict[str, int], *, content: str = "", project: str | None = None
) -> None:
    """Make a database (as ``aiosvc migrate`` does) holding these sessions, oldest first,
    each with this many messages (``message N`` and ``content``)."""
    subprocess.run(installed.argv("migrate", "--db", str(db)), check=True, capture_output=True)
    with sqlite3.connect(db) as conn:
        for session_id, count in histories.items():
            conn.execute(
                "INSERT INTO sessions (id, title, agent, project, computer, status, created_at, "
                "updated_at, message_count) VALUES (?, 't', 'echo', ?, 'here', 'idle', ?, ?, ?)",
                [session_id, project, NOW, NOW, count],
            )
            conn.executemany(
                "INSERT INTO messages (id, session_id, role, content, status, created_at) "
                "VALUES (?, ?, 'user', ?, 'complete', ?)",
                [
                    (f"msg_{session_id}_{n:06d}", session_id, f"message {n}{content}", NOW)
                    for n in range(count)
                ],
            )
    conn.close()


async def get(api: Api, path: str) -> tuple[int, Any]:
    """GET a path; its status and body."""
    return await api.call("GET", path)


def texts(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["data"]]


def invalid(name: str, problem: str) -> dict[str, Any]:
    """The envelope of ``400 invalid_parameter``."""
    return {
        "error": {
            "code": "invalid_parameter",
            "message": f"query parameter {name!r}: {problem}",
            "status": 400,
            "details": {"parameter": name},
        }
    }


async def test_history_pages_by_cursor_and_offset_across_changes(db_path: Path) -> None:
    build(db_path, {"ses_long": 1000, "ses_other": 3})
    server = Server(db_path)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            base = "/api/v1/sessions/ses_long/messages"
            # An old client's page: limit and offset, total from the session's count.
            status, body = await get(api, f"{base}?limit=3&offset=10")
            assert status == 200
            assert texts(body) == ["message 10", "message 11", "message 12"]
            assert (body["total"], body["limit"], body["offset"]) == (1000, 3, 10)
            assert (body["prev"], body["next"]) == ("msg_ses_long_000010", "msg_ses_long_000012")
            status, body = await get(api, base)
            assert (status, len(body["data"]), body["limit"], body["offset"]) == (200, 50, 50, 0)
            assert body["prev"] is None

            # Forward by cursor to the end, then back again.
            seen: list[str] = []
            cursor: str | None = None
            while True:
                query = f"?limit=300&after={cursor}" if cursor else "?limit=300"
                status, body = await get(api, base + query)
                assert status == 200
                seen += texts(body)
                if cursor:
                    assert body["offset"] is None
                cursor = body["next"]
                if cursor is None:
                    break
            assert seen == [f"message {n}" for n in range(1000)]
            status, body = await get(api, f"{base}?limit=4&before=msg_ses_long_000999")
            assert texts(body) == [f"message {n}" for n in range(995, 999)]
            assert (body["prev"], body["next"]) == ("msg_ses_long_000995", "msg_ses_long_000998")
            status, body = await get(api, f"{base}?limit=4&before=msg_ses_long_000003")
            assert texts(body) == ["message 0", "message 1", "message 2"]
            assert body["prev"] is None
            status, body = await get(api, f"{base}?offset=999&limit=5")
            assert (texts(body), body["next"]) == (["message 999"], None)

            # A message sent now is on the page after the last one, and the total counts it.
            status, sent = await api.call("POST", f"{base}?wait=true", {"content": "new one"})
            assert status == 200, sent
            status, body = await get(api, f"{base}?after=msg_ses_long_000999")
            assert texts(body) == ["new one", "new one"]  # the message and the echo's reply
            assert body["total"] == 1002
            status, again = await get(api, f"{base}?limit=4&before=msg_ses_long_000999")
            assert texts(again) == [f"message {n}" for n in range(995, 999)]
            assert again["total"] == 1002

            # Bad cursors change nothing and say what is wrong.
            for query, name, problem in [
                ("?after=bad!id", "after", "must be an id (1 to 64 of A-Z, a-z, 0-9, '_', '-')"),
                (
                    "?before=" + "x" * 65,
                    "before",
                    "must be an id (1 to 64 of A-Z, a-z, 0-9, '_', '-')",
                ),
                ("?after=msg_nope", "after", "no message 'msg_nope' in this session"),
                (
                    "?before=msg_ses_other_000001",
                    "before",
                    "no message 'msg_ses_other_000001' in this session",
                ),
                (
                    "?after=msg_ses_long_000001&before=msg_ses_long_000009",
                    "after",
                    "give before or after, not both",
                ),
                (
                    "?after=msg_ses_long_000001&offset=3",
                    "offset",
                    "cannot be combined with before or after",
                ),
            ]:
                status, body = await get(api, base + query)
                assert (status, body) == (400, invalid(name, problem)), query
    finally:
        assert await server.stop() == 0


async def test_session_lists_by_cursor_with_and_without_filters(db_path: Path) -> None:
    build(db_path, {f"ses_{n:03d}": 0 for n in range(120)})
    server = Server(db_path)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            status, first = await get(api, "/api/v1/sessions")  # the cached first page
            assert status == 200
            assert [s["id"] for s in first["data"]][:2] == ["ses_119", "ses_118"]
            assert (first["total"], first["limit"], first["offset"]) == (120, 50, 0)
            assert (first["next"], first["prev"]) == ("ses_070", None)
            status, page = await get(api, "/api/v1/sessions?limit=50&offset=100")
            assert [s["id"] for s in page["data"]] == [f"ses_{n:03d}" for n in range(19, -1, -1)]
            assert (page["total"], page["offset"], page["next"]) == (120, 100, None)

            status, older = await get(api, f"/api/v1/sessions?limit=5&after={first['next']}")
            assert [s["id"] for s in older["data"]] == [f"ses_{n:03d}" for n in range(69, 64, -1)]
            assert (older["offset"], older["prev"], older["next"]) == (None, "ses_069", "ses_065")
            status, newer = await get(api, "/api/v1/sessions?limit=5&before=ses_069")
            assert [s["id"] for s in newer["data"]] == [f"ses_{n:03d}" for n in range(74, 69, -1)]
            assert newer["next"] == "ses_070"

            # Sessions created meanwhile are before the first page; ending some filters them.
            created = [await api.session() for _ in range(2)]
            status, top = await get(api, "/api/v1/sessions?limit=5&before=ses_119")
            assert [s["id"] for s in top["data"]] == created[::-1]
            assert (top["prev"], top["total"]) == (None, 122)
            for n in (100, 101, 102, 50):
                status, _ = await api.call("POST", f"/api/v1/sessions/ses_{n:03d}/end")
                assert status == 200
            status, ended = await get(api, "/api/v1/sessions?status=ended&limit=2")
            assert [s["id"] for s in ended["data"]] == ["ses_102", "ses_101"]
            assert (ended["total"], ended["next"]) == (4, "ses_101")
            status, rest = await get(api, "/api/v1/sessions?status=ended&limit=2&after=ses_101")
            assert [s["id"] for s in rest["data"]] == ["ses_100", "ses_050"]
            assert (rest["next"], rest["prev"]) == (None, "ses_100")
            status, idle = await get(api, "/api/v1/sessions?status=idle&computer=here&limit=1")
            assert idle["total"] == 116  # 120 built, minus 4 ended (created ones are elsewhere)

            async with http.delete(server.url + "/api/v1/sessions/ses_065") as response:
                assert response.status == 204
            status, body = await get(api, "/api/v1/sessions?after=ses_065")
            assert (status, body) == (400, invalid("after", "no session 'ses_065'"))
    finally:
        assert await server.stop() == 0


async def test_a_hook_event_over_the_size_limit_is_413_and_publishes_nothing(
    db_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text("[limits]\nmax_event_bytes = 10000\n")
    server = Server(db_path, config=config)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            status, first = await api.call("POST", "/api/v1/hooks", {"type": "a", "data": "x"})
            assert status == 202
            big = {"type": "a", "data": "x" * 9970}  # 10,010 bytes as the event's JSON
            status, body = await api.call("POST", "/api/v1/hooks", big)
            assert (status, body) == (
                413,
                {
                    "error": {
                        "code": "payload_too_large",
                        "message": "the hook event is 10010 bytes as JSON, over the limit of "
                        "10000 bytes (limits.max_event_bytes)",
                        "status": 413,
                    }
                },
            )
            status, fits = await api.call(
                "POST", "/api/v1/hooks", {"type": "a", "data": "x" * 9960}
            )
            assert status == 202
            assert fits["data"]["event_id"] == first["data"]["event_id"] + 1  # none between
    finally:
        assert await server.stop() == 0


async def sse_frames(http: aiohttp.ClientSession, url: str, last_id: int, count: int) -> list[str]:
    """The first ``count`` event blocks' ``id`` and ``event`` lines after ``last_id``."""
    found: list[str] = []
    headers = {"Last-Event-ID": str(last_id)}
    async with http.get(url + "/api/v1/events?topics=hooks", headers=headers) as response:
        async with asyncio.timeout(20):
            async for line in response.content:
                if line.startswith((b"id: ", b"event: ")):
                    found.append(line.decode().strip())
                if sum(f.startswith("event: ") for f in found) == count:
                    return found
    raise AssertionError(found)


async def test_the_resume_window_is_the_ring_buffers_byte_budget(
    db_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "aiosvc.toml"
    config.write_text("[events]\nmax_bytes = 1048576\n")  # 1 MiB, and 10,000 events at most
    server = Server(db_path, config=config)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            ids = []
            for n in range(10):  # about 200 KB each: the newest four or five fit
                status, body = await api.call(
                    "POST", "/api/v1/hooks", {"type": "big", "data": f"{n}" + "y" * 200_000}
                )
                assert status == 202
                ids.append(body["data"]["event_id"])
            newest = ids[-1]
            # From the sixth: the rest is kept, and replayed.
            replayed = await sse_frames(http, server.url, ids[5], 4)
            assert replayed == [line for i in ids[6:] for line in (f"id: {i}", "event: hook.big")]
            # From the first: older than the window, so a reset to the newest id.
            assert await sse_frames(http, server.url, ids[0], 1) == [
                f"id: {newest}",
                "event: reset",
            ]
    finally:
        assert await server.stop() == 0


@pytest.mark.timeout(300)
async def test_memory_stays_within_a_small_budget_whatever_is_posted_and_read(
    db_path: Path, tmp_path: Path
) -> None:
    """8 MiB for the cache and 8 MiB for the ring buffer: 75 MB of hook events posted and
    50 MB of histories read leave the daemon far below what keeping them would take."""
    build(db_path, {f"ses_{n:02d}": 2000 for n in range(25)}, content=" " + "w" * 1000)
    config = tmp_path / "aiosvc.toml"
    config.write_text("[cache]\nmax_bytes = 8388608\n\n[events]\nmax_bytes = 8388608\n")
    server = Server(db_path, config=config)
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            started_kib = vm_rss_kib(pid)
            pad = "h" * 250_000
            for n in range(300):
                status, _ = await api.call(
                    "POST", "/api/v1/hooks", {"type": "report", "data": {"n": n, "pad": pad}}
                )
                assert status == 202
            for n in range(25):
                for offset in range(0, 2000, 500):
                    path = f"/api/v1/sessions/ses_{n:02d}/messages?limit=500&offset={offset}"
                    status, body = await get(api, path)
                    assert status == 200 and len(body["data"]) == 500
            grown_mib = (vm_rss_kib(pid) - started_kib) / 1024
            print(f"RSS {started_kib / 1024:.0f} MiB at start, grew {grown_mib:.0f} MiB")
            # 16 MiB of budgets, plus what reading and answering 500 KB pages needs at once;
            # keeping what went through would take well over 200 MiB.
            assert grown_mib < 80, f"the daemon grew {grown_mib:.0f} MiB"
    finally:
        assert await server.stop() == 0

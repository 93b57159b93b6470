"""Sessions and messages over REST, through ``create_app`` on a test server: exact wire shapes."""

from __future__ import annotations

import io
import re
from typing import Any

import attrs

from aiosvc.app import create_app
from aiosvc.config import Config
from aiosvc.web.keys import FIRST_PAGE
from tests.conftest import ClientFactory
from tests.helpers import MESSAGE_KEYS, SESSION_KEYS, TIME, Client, create_session, wait_for


async def test_create_get_and_list_sessions(client: Client) -> None:
    response = await client.post("/api/v1/sessions", json={"title": "first", "project": "website"})
    assert response.status == 201
    body = await response.json()
    assert set(body) == {"data"}
    session = body["data"]
    assert set(session) == SESSION_KEYS
    assert response.headers["Location"] == f"/api/v1/sessions/{session['id']}"
    assert response.headers["Content-Type"] == "application/json"
    assert session["title"] == "first"
    assert session["agent"] == "echo"
    assert session["project"] == "website"
    assert session["status"] == "idle"
    assert session["message_count"] == 0
    assert session["last_message_at"] is None
    assert TIME.fullmatch(session["created_at"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session["id"])

    fetched = await client.get(f"/api/v1/sessions/{session['id']}")
    assert fetched.status == 200
    assert await fetched.json() == {"data": session}

    second = await create_session(client)
    assert second["title"] == ""
    listing = await client.get("/api/v1/sessions")
    assert await listing.json() == {
        "data": [second, session],
        "total": 2,
        "limit": 50,
        "offset": 0,
        "next": None,
        "prev": None,
    }


async def test_list_filters_and_pagination(client: Client) -> None:
    made = [
        await create_session(client, title=f"s{n}", project="p" if n % 2 else None)
        for n in range(5)
    ]
    page = await (await client.get("/api/v1/sessions?limit=2&offset=1")).json()
    assert [s["title"] for s in page["data"]] == ["s3", "s2"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    in_p = await (await client.get("/api/v1/sessions?project=p")).json()
    assert [s["title"] for s in in_p["data"]] == ["s3", "s1"]
    await client.post(f"/api/v1/sessions/{made[0]['id']}/end")
    ended = await (await client.get("/api/v1/sessions?status=ended")).json()
    assert [s["id"] for s in ended["data"]] == [made[0]["id"]]
    computer = made[0]["computer"]
    mine = await (await client.get(f"/api/v1/sessions?computer={computer}")).json()
    assert mine["total"] == 5


async def test_the_unfiltered_first_page_follows_changes_and_the_page_size_limit(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    limits = attrs.evolve(config.limits, max_page_size=3)
    client = await aiohttp_client(create_app(attrs.evolve(config, limits=limits)))
    made = [await create_session(client, title=f"s{n}") for n in range(4)]

    async def first_page() -> dict[str, Any]:
        response = await client.get("/api/v1/sessions")
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body

    page = await first_page()
    assert [s["title"] for s in page["data"]] == ["s3", "s2", "s1"]
    assert (page["total"], page["limit"], page["offset"]) == (4, 3, 0)
    await client.patch(f"/api/v1/sessions/{made[2]['id']}", json={"title": "renamed"})
    await client.delete(f"/api/v1/sessions/{made[3]['id']}")
    page = await first_page()
    assert [s["title"] for s in page["data"]] == ["renamed", "s1", "s0"]
    assert page["total"] == 3
    assert page == await (await client.get("/api/v1/sessions?limit=3")).json()


async def test_the_first_page_body_is_built_once_per_change_of_the_sessions(
    client: Client,
) -> None:
    first_page = client.app[FIRST_PAGE]
    body = first_page.body(50)
    assert first_page.body(50) is body  # kept while nothing changes
    await create_session(client, title="new")
    changed = first_page.body(50)
    assert changed is not body and b'"title":"new"' in changed
    assert first_page.body(50) is changed
    assert first_page.body(2) is not changed  # another page size: built again
    assert first_page.body(2) == await (await client.get("/api/v1/sessions?limit=2")).read()


async def test_bad_query_parameters_are_400(client: Client) -> None:
    for query, name in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("limit=99999999999999999999999", "limit"),
        ("status=sleeping", "status"),
    ]:
        response = await client.get(f"/api/v1/sessions?{query}")
        assert response.status == 400, query
        body = await response.json()
        assert body["error"]["code"] == "invalid_parameter"
        assert body["error"]["status"] == 400
        assert body["error"]["details"] == {"parameter": name}


async def test_patch_end_delete(client: Client) -> None:
    session = await create_session(client, title="old")
    url = f"/api/v1/sessions/{session['id']}"
    patched = await client.patch(url, json={"title": "new"})
    assert patched.status == 200
    data = (await patched.json())["data"]
    assert data["title"] == "new"
    assert data["updated_at"] >= session["updated_at"]

    ended = await client.post(url + "/end")
    assert ended.status == 200
    assert (await ended.json())["data"]["status"] == "ended"
    refused = await client.post(url + "/messages", json={"content": "hi"})
    assert refused.status == 409
    assert (await refused.json())["error"]["code"] == "session_ended"

    deleted = await client.delete(url)
    assert deleted.status == 204
    assert await deleted.read() == b""
    gone = await client.get(url)
    assert gone.status == 404
    assert (await gone.json())["error"] == {
        "code": "not_found",
        "message": f"session {session['id']!r} not found",
        "status": 404,
        "details": {"kind": "session"},
    }
    assert (await client.delete(url)).status == 404


async def test_send_message_202_then_the_reply_streams_into_history(client: Client) -> None:
    session = await create_session(client)
    url = f"/api/v1/sessions/{session['id']}/messages"
    response = await client.post(url, json={"content": "hello there, world"})
    assert response.status == 202
    data = (await response.json())["data"]
    assert set(data) == {"message", "reply_id", "command_id"}
    message = data["message"]
    assert set(message) == MESSAGE_KEYS
    assert (message["role"], message["content"], message["status"]) == (
        "user",
        "hello there, world",
        "complete",
    )
    assert response.headers["Location"] == f"/api/v1/commands/{data['command_id']}"

    async def replied() -> bool:
        command = await (await client.get(f"/api/v1/commands/{data['command_id']}")).json()
        return bool(command["data"]["status"] == "succeeded")

    await wait_for(replied)
    command = (await (await client.get(f"/api/v1/commands/{data['command_id']}")).json())["data"]
    assert set(command) == {
        "id",
        "type",
        "status",
        "session_id",
        "created_at",
        "finished_at",
        "result",
        "error",
    }
    assert command["result"] == {"message_id": data["reply_id"], "status": "complete"}
    history = await (await client.get(url)).json()
    assert history["total"] == 2
    assert [(m["role"], m["content"], m["status"]) for m in history["data"]] == [
        ("user", "hello there, world", "complete"),
        ("assistant", "hello there, world", "complete"),
    ]
    assert history["data"][1]["id"] == data["reply_id"]
    after = (await (await client.get(f"/api/v1/sessions/{session['id']}")).json())["data"]
    assert after["message_count"] == 2
    assert after["status"] == "idle"


async def test_send_and_wait_answers_the_finished_reply(client: Client) -> None:
    session = await create_session(client)
    response = await client.post(
        f"/api/v1/sessions/{session['id']}/messages?wait=true", json={"content": "ping"}
    )
    assert response.status == 200
    reply = (await response.json())["data"]
    assert set(reply) == MESSAGE_KEYS
    assert (reply["role"], reply["content"], reply["status"], reply["error"]) == (
        "assistant",
        "ping",
        "complete",
        None,
    )
    assert TIME.fullmatch(reply["completed_at"])


async def test_read_your_writes(client: Client) -> None:
    session = await create_session(client)
    url = f"/api/v1/sessions/{session['id']}"
    for n in range(10):
        await client.patch(url, json={"title": f"t{n}"})
        assert (await (await client.get(url)).json())["data"]["title"] == f"t{n}"
        listed = (await (await client.get("/api/v1/sessions")).json())["data"]
        assert [s["title"] for s in listed] == [f"t{n}"]
        sent = await client.post(url + "/messages", json={"content": f"m{n}"})
        sent_id = (await sent.json())["data"]["message"]["id"]
        history = (await (await client.get(url + "/messages?limit=500")).json())["data"]
        assert sent_id in [m["id"] for m in history]


async def test_cancel_a_slow_reply(client: Client) -> None:
    session = await create_session(client, agent="slow")
    url = f"/api/v1/sessions/{session['id']}"
    sent = (
        await (await client.post(url + "/messages", json={"content": "a b c d e f g h"})).json()
    )["data"]

    async def streaming() -> bool:
        history = (await (await client.get(url + "/messages")).json())["data"]
        return len(history) == 2 and history[1]["status"] == "streaming"

    await wait_for(streaming)
    cancelled = await client.post(url + "/cancel")
    assert cancelled.status == 202
    assert await cancelled.json() == {
        "data": {"session_id": session["id"], "cancelled": [sent["reply_id"]]}
    }

    async def settled() -> bool:
        history = (await (await client.get(url + "/messages")).json())["data"]
        return bool(history[1]["status"] == "cancelled")

    await wait_for(settled)
    reply = (await (await client.get(url + "/messages")).json())["data"][1]
    assert reply["error"] == {"code": "cancelled", "message": "the reply was cancelled"}
    assert "a b c d e f g h".startswith(reply["content"])


async def test_unknown_agent_is_422_and_validation_names_fields(client: Client) -> None:
    response = await client.post("/api/v1/sessions", json={"agent": "nope"})
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "unknown_agent"

    response = await client.post("/api/v1/sessions", json={"title": 5, "colour": "red"})
    assert response.status == 400
    assert await response.json() == {
        "error": {
            "code": "validation_error",
            "message": "invalid field(s): colour, title",
            "status": 400,
            "details": {
                "fields": {"title": "expected a string, got an integer", "colour": "unknown field"}
            },
        }
    }
    session = await create_session(client)
    url = f"/api/v1/sessions/{session['id']}/messages"
    for body, field in [
        ({}, "content"),
        ({"content": ""}, "content"),
        ({"content": "x" * 262_145}, "content"),
    ]:
        response = await client.post(url, json=body)
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["code"] == "validation_error"
        assert list(error["details"]["fields"]) == [field]
    response = await client.post("/api/v1/sessions", json={"title": "t" * 201})
    assert (await response.json())["error"]["details"] == {
        "fields": {"title": "must be at most 200 characters"}
    }
    history = await (await client.get(url)).json()
    assert history["total"] == 0


async def test_bad_json_media_type_and_size(client: Client) -> None:
    for raw in (b"{", b'{"content": "\\ud800"}', b'{"content": "\xff"}', b"[1]", b"null"):
        response = await client.post(
            "/api/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status == 400, raw
        assert (await response.json())["error"]["code"] in {"invalid_json", "validation_error"}
    response = await client.post(
        "/api/v1/sessions",
        data=b"title=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"
    response = await client.post(
        "/api/v1/sessions", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert response.status == 415
    big = b'{"title": "' + b"x" * (1024 * 1024) + b'"}'
    response = await client.post(
        "/api/v1/sessions", data=io.BytesIO(big), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["error"] == {
        "code": "payload_too_large",
        "message": "the request body is over the limit of 1048576 bytes",
        "status": 413,
    }
    listing = await (await client.get("/api/v1/sessions")).json()
    assert listing["total"] == 0


async def test_unknown_route_405_and_malformed_ids(client: Client) -> None:
    response = await client.get("/api/v1/nothing-here")
    assert response.status == 404
    assert await response.json() == {
        "error": {
            "code": "not_found",
            "message": "no route matches GET /api/v1/nothing-here",
            "status": 404,
        }
    }
    response = await client.put("/api/v1/sessions")
    assert response.status == 405
    body = await response.json()
    assert body["error"]["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    assert body["error"]["details"] == {"allowed": ["GET", "HEAD", "POST"]}
    for bad in ("x" * 65, "a%20b", "..%2F..%2Fetc", "1'%20OR%20'1'='1"):
        response = await client.get(f"/api/v1/sessions/{bad}")
        assert response.status == 404, bad
        assert (await response.json())["error"]["code"] == "not_found"
    response = await client.get("/api/v1/commands/nope")
    assert response.status == 404


async def test_request_id_is_echoed_or_generated(client: Client) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    response = await client.get("/api/v1/nothing")
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-ID"])
    response = await client.get("/health", headers={"X-Request-ID": "bad id\u00e9"})
    assert response.headers["X-Request-ID"] != "bad id\u00e9"


async def test_health_and_agents(client: Client) -> None:
    for path in ("/health", "/api/v1/health"):
        response = await client.get(path)
        assert response.status == 200
        data: dict[str, Any] = (await response.json())["data"]
        assert set(data) == {"status", "version", "uptime_s", "db"}
        assert (data["status"], data["db"]) == ("ok", "ok")
    agents = await (await client.get("/api/v1/agents")).json()
    assert agents == {
        "data": [
            {"name": "echo", "kind": "echo", "default": True, "config": {"delay_ms": 0}},
            {"name": "slow", "kind": "echo", "default": False, "config": {"delay_ms": 200}},
        ],
        "total": 2,
        "limit": 50,
        "offset": 0,
    }

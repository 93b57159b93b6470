"""Remembered decisions and external approvals, end to end through a real ``aiosvc serve``:
``"remember": "session"`` across tool calls and a restart, ``POST /api/v1/approvals`` with and
without ``?wait=true`` answered from a WebSocket client, its expiry, and the example hook
script that coding agents call."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.process_api import Api
from tests.serving import Server
from tests.test_approvals import APPROVAL_KEYS

HOOK = Path(__file__).resolve().parent.parent / "config" / "examples" / "approve-hook.py"


@pytest.fixture
async def api(db_path: Path) -> AsyncIterator[Api]:
    server = Server(db_path)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(http, server)
    finally:
        assert await server.stop() == 0


async def pending(api: Api, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in {"status": "pending", **filters}.items())
    status, body = await api.call("GET", f"/api/v1/approvals?{query}")
    assert status == 200
    found: list[dict[str, Any]] = body["data"]
    return found


async def next_pending(api: Api, session_id: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while not (found := await pending(api, session_id=session_id)):
            await asyncio.sleep(0.05)
    return found[0]


async def ask_tool(api: Api, session_id: str, tool: str, count: int) -> dict[str, Any]:
    """Send ``/tool NAME``; return the reply once ``count`` replies are complete."""
    status, _ = await api.call(
        "POST", f"/api/v1/sessions/{session_id}/messages", {"content": f'/tool {tool} {{"n": 1}}'}
    )
    assert status == 202
    return (await api.replies(session_id, "complete", count))[-1]


async def test_remember_approves_later_calls_of_the_tool_in_that_session(api: Api) -> None:
    session_id = await api.session()
    other = await api.session()
    url = f"/api/v1/sessions/{session_id}/messages"
    await api.call("POST", url, {"content": "/tool shell {}"})
    first = await next_pending(api, session_id)
    status, body = await api.call(
        "POST", f"/api/v1/approvals/{first['id']}", {"decision": "approve", "remember": "session"}
    )
    assert status == 200
    assert (body["data"]["status"], set(body["data"])) == ("approved", APPROVAL_KEYS)
    assert (await api.replies(session_id, "complete"))[0]["content"] == "tool shell approved"
    # The same tool again: no approval asked, approved at once.
    second = await ask_tool(api, session_id, "shell", 2)
    assert second["content"] == "tool shell approved"
    _, listing = await api.call("GET", f"/api/v1/approvals?session_id={session_id}")
    assert [a["id"] for a in listing["data"]] == [first["id"]]
    # Another tool in that session, or that tool in another session, still asks.
    await api.call("POST", url, {"content": "/tool rm {}"})
    assert (await next_pending(api, session_id))["tool"] == "rm"
    await api.call("POST", f"/api/v1/sessions/{other}/messages", {"content": "/tool shell {}"})
    assert (await next_pending(api, other))["tool"] == "shell"
    # The use of a remembered tool is still visible: the log says it ran without asking.
    assert '"approval_remembered"' in api.server.log()


async def test_remember_is_validated_and_changes_nothing_when_refused(api: Api) -> None:
    session_id = await api.session()
    await api.call("POST", f"/api/v1/sessions/{session_id}/messages", {"content": "/tool t"})
    approval = await next_pending(api, session_id)
    url = f"/api/v1/approvals/{approval['id']}"
    for body, problem in (
        ({"decision": "approve", "remember": "forever"}, "expected one of: 'session'"),
        ({"decision": "approve", "remember": True}, "expected one of: 'session'"),
        (
            {"decision": "deny", "remember": "session"},
            "only an approval can be remembered, not a denial",
        ),
    ):
        status, answer = await api.call("POST", url, body)
        assert status == 400, answer
        assert answer["error"]["code"] == "validation_error"
        assert answer["error"]["details"] == {"fields": {"remember": problem}}
    assert [a["id"] for a in await pending(api)] == [approval["id"]]


async def test_a_remembered_tool_stays_approved_after_a_restart(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        session_id = await api.session()
        await api.call("POST", f"/api/v1/sessions/{session_id}/messages", {"content": "/tool x"})
        approval = await next_pending(api, session_id)
        await api.call(
            "POST",
            f"/api/v1/approvals/{approval['id']}",
            {"decision": "approve", "remember": "session"},
        )
        await api.replies(session_id, "complete")
        assert await server.stop() == 0
        again = Server(db_path, port=server.port)
        await again.start()
        try:
            api = Api(http, again)
            assert (await ask_tool(api, session_id, "x", 2))["content"] == "tool x approved"
            # External approvals filed under the session honour it too.
            status, body = await api.call(
                "POST", "/api/v1/approvals", {"tool": "x", "input": {}, "session_id": session_id}
            )
            assert status == 201
            assert (body["data"]["status"], body["data"]["session_id"]) == ("approved", session_id)
            assert body["data"]["resolved_at"] is not None
        finally:
            assert await again.stop() == 0


async def test_an_external_approval_is_listed_and_published_and_resolved(api: Api) -> None:
    async with api.http.ws_connect(api.server.url + "/api/v1/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_json({"op": "subscribe", "topics": ["approvals"], "id": 1})
        assert (await ws.receive_json())["type"] == "ack"
        status, body = await api.call(
            "POST", "/api/v1/approvals", {"tool": "Bash", "input": {"command": "rm -rf /"}}
        )
        assert status == 201
        created = body["data"]
        assert created == {
            "id": created["id"],
            "session_id": None,
            "message_id": None,
            "tool": "Bash",
            "input": {"command": "rm -rf /"},
            "status": "pending",
            "created_at": created["created_at"],
            "resolved_at": None,
        }
        frame = await ws.receive_json()
        assert (frame["event"]["type"], frame["event"]["topic"]) == (
            "approval.requested",
            "approvals",
        )
        assert frame["event"]["data"] == created
        assert [a["id"] for a in await pending(api)] == [created["id"]]
        status, one = await api.call("GET", f"/api/v1/approvals/{created['id']}")
        assert (status, one["data"]) == (200, created)
        # No session: nothing to remember it for.
        status, refused = await api.call(
            "POST",
            f"/api/v1/approvals/{created['id']}",
            {"decision": "approve", "remember": "session"},
        )
        assert status == 400
        assert refused["error"]["details"] == {
            "fields": {"remember": "this approval belongs to no session"}
        }
        await ws.send_json(
            {"op": "approve", "approval_id": created["id"], "decision": "deny", "id": 2}
        )
        resolved, ack = await ws.receive_json(), await ws.receive_json()
        assert resolved["event"]["type"] == "approval.resolved"  # published before the ack
        assert (ack["type"], ack["id"], ack["data"]["status"]) == ("ack", 2, "denied")


async def test_wait_answers_once_a_websocket_client_approves(api: Api) -> None:
    session_id = await api.session()
    async with api.http.ws_connect(api.server.url + "/api/v1/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_json({"op": "subscribe", "topics": [f"session:{session_id}"]})
        assert (await ws.receive_json())["type"] == "ack"
        waiting = asyncio.ensure_future(
            api.call(
                "POST",
                "/api/v1/approvals?wait=true",
                {"tool": "Edit", "input": {"file": "a.py"}, "session_id": session_id},
            )
        )
        frame = await ws.receive_json()
        requested = frame["event"]
        assert (requested["type"], requested["topic"]) == (
            "approval.requested",
            f"session:{session_id}",
        )
        await asyncio.sleep(0.2)
        assert not waiting.done()  # it blocks until someone decides
        await ws.send_json(
            {
                "op": "approve",
                "approval_id": requested["data"]["id"],
                "decision": "approve",
                "remember": "session",
            }
        )
        status, body = await asyncio.wait_for(waiting, 10)
    assert status == 200
    assert (body["data"]["id"], body["data"]["status"]) == (requested["data"]["id"], "approved")
    # Remembered for the session: the next one is approved at once, even with wait.
    status, again = await api.call(
        "POST",
        "/api/v1/approvals?wait=true",
        {"tool": "Edit", "input": {}, "session_id": session_id},
    )
    assert (status, again["data"]["status"]) == (200, "approved")


async def test_an_unanswered_external_approval_expires(api: Api) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body = await api.call(
        "POST", "/api/v1/approvals?wait=true", {"tool": "t", "input": {}, "timeout_s": 0.5}
    )
    assert status == 200, body
    assert body["data"]["status"] == "expired"
    assert loop.time() - started >= 0.5
    # Without wait it expires all the same, and a late decision is a conflict.
    status, body = await api.call(
        "POST", "/api/v1/approvals", {"tool": "t", "input": [1], "timeout_s": 0.3}
    )
    assert status == 201
    approval_id = body["data"]["id"]
    async with asyncio.timeout(10):
        while (await api.call("GET", f"/api/v1/approvals/{approval_id}"))[1]["data"][
            "status"
        ] == "pending":
            await asyncio.sleep(0.05)
    status, late = await api.call(
        "POST", f"/api/v1/approvals/{approval_id}", {"decision": "approve"}
    )
    assert (status, late["error"]["code"]) == (409, "already_resolved")


async def test_a_client_that_leaves_leaves_the_approval_pending(api: Api) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await api.call("POST", "/api/v1/approvals?wait=true", {"tool": "gone", "input": {}})
    async with asyncio.timeout(10):  # (on a loaded machine the request may land late)
        while not (still := await pending(api)):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # and stays pending after the client left
    (left,) = await pending(api)
    assert [left["id"]] == [a["id"] for a in still] and left["tool"] == "gone"
    status, body = await api.call("POST", f"/api/v1/approvals/{left['id']}", {"decision": "deny"})
    assert (status, body["data"]["status"]) == (200, "denied")


async def test_bad_external_approvals_are_refused(api: Api) -> None:
    for body, field in (
        ({"input": {}}, "tool"),
        ({"tool": "t"}, "input"),
        ({"tool": "t", "input": None}, "input"),
        ({"tool": "", "input": {}}, "tool"),
        ({"tool": "x" * 201, "input": {}}, "tool"),
        ({"tool": "t", "input": {}, "timeout_s": 0}, "timeout_s"),
        ({"tool": "t", "input": {}, "timeout_s": 3601}, "timeout_s"),
        ({"tool": "t", "input": {}, "timeout_s": "5"}, "timeout_s"),
        ({"tool": "t", "input": {}, "extra": 1}, "extra"),
    ):
        status, answer = await api.call("POST", "/api/v1/approvals", body)
        assert status == 400, body
        assert list(answer["error"]["details"]["fields"]) == [field], answer
    status, answer = await api.call(
        "POST", "/api/v1/approvals", {"tool": "t", "input": {}, "session_id": "ses_nope"}
    )
    assert (status, answer["error"]["code"]) == (404, "not_found")
    status, answer = await api.call(
        "POST", "/api/v1/approvals", {"tool": "t", "input": "x" * 300_000}
    )
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    assert "limits.max_event_bytes" in answer["error"]["message"]
    assert await pending(api) == []


async def test_shutdown_answers_who_waits(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server)
        waiting = asyncio.ensure_future(
            api.call("POST", "/api/v1/approvals?wait=true", {"tool": "t", "input": {}})
        )
        async with asyncio.timeout(10):
            while not await pending(api):
                await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        stopping = asyncio.ensure_future(server.stop())
        status, body = await asyncio.wait_for(waiting, 10)
        assert (status, body["data"]["status"]) == (200, "expired")
        assert await stopping == 0
        assert loop.time() - started < 8  # not held until the shutdown timeout


async def test_waits_outlast_the_header_deadline(tmp_path: Path) -> None:
    """A request that waits (an approval, a reply) is not cut by ``header_timeout_s``: aiohttp
    reparses with no bytes once the body is read, which starts no head deadline."""
    config = tmp_path / "aiosvc.toml"
    config.write_text("[limits]\nheader_timeout_s = 1.0\n\n[approvals]\ntimeout_s = 2.5\n")
    server = Server(tmp_path / "aiosvc.db", config=config)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server)
            loop = asyncio.get_running_loop()
            started = loop.time()
            status, body = await api.call(
                "POST", "/api/v1/approvals?wait=true", {"tool": "t", "input": {}, "timeout_s": 2.5}
            )
            assert (status, body["data"]["status"]) == (200, "expired")
            assert loop.time() - started >= 2.5
            session_id = await api.session()
            status, body = await api.call(
                "POST", f"/api/v1/sessions/{session_id}/messages?wait=true", {"content": "/tool x"}
            )
            assert (status, body["data"]["content"]) == (200, "tool x expired")
        # the hook script's urllib sends its head and body at once: the same holds
        code, err = await run_hook(
            server, b'{"tool": "t", "input": {}}', AIOSVC_APPROVAL_TIMEOUT_S="2.5"
        )
        assert (code, "was expired" in err) == (2, True)
    finally:
        assert await server.stop() == 0


async def run_hook(server: Server, stdin: bytes, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HOOK),
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"AIOSVC_URL": server.url, "PATH": "/usr/bin:/bin", **env},
    )
    _, err = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return process.returncode, err.decode()


CLAUDE_CALL = {
    "session_id": "2b7c3e0a-claude",
    "transcript_path": "/tmp/t.jsonl",
    "cwd": "/tmp",
    "hook_event_name": "PreToolUse",
    "tool_name": "Bash",
    "tool_input": {"command": "echo $(whoami); rm -rf ~", "description": "`x`"},
}


async def decide_next(api: Api, decision: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while not (found := await pending(api)):
            await asyncio.sleep(0.05)
    status, _ = await api.call(
        "POST", f"/api/v1/approvals/{found[0]['id']}", {"decision": decision}
    )
    assert status == 200
    return found[0]


async def test_the_example_hook_exits_0_approved_and_2_denied(api: Api) -> None:
    stdin = json.dumps(CLAUDE_CALL).encode()
    hook = asyncio.ensure_future(run_hook(api.server, stdin))
    asked = await decide_next(api, "approve")
    assert (asked["tool"], asked["input"]) == ("Bash", CLAUDE_CALL["tool_input"])
    assert await hook == (0, "")
    hook = asyncio.ensure_future(run_hook(api.server, stdin))
    await decide_next(api, "deny")
    code, err = await hook
    assert code == 2
    assert "'Bash' call was denied" in err
    # Under a session, and with a short timeout: expired is a denial too.
    session_id = await api.session()
    code, err = await run_hook(
        api.server,
        json.dumps({"tool": "Write", "input": {"path": "x"}}).encode(),
        AIOSVC_SESSION_ID=session_id,
        AIOSVC_APPROVAL_TIMEOUT_S="1",
    )
    assert (code, "was expired" in err) == (2, True)
    _, listing = await api.call("GET", f"/api/v1/approvals?session_id={session_id}")
    assert [a["status"] for a in listing["data"]] == ["expired"]


async def test_the_example_hook_blocks_on_bad_input_or_no_daemon(api: Api) -> None:
    assert (await run_hook(api.server, b"not json"))[0] == 2
    assert (await run_hook(api.server, b'{"tool_input": {}}'))[0] == 2
    unreachable = Server(api.server.db.with_name("none.db"))
    code, err = await run_hook(unreachable, json.dumps(CLAUDE_CALL).encode())
    assert code == 2 and "no answer from aiosvc" in err
    assert await pending(api) == []

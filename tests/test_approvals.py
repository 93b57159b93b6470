"""Tool approvals and cancel in every state, through a real server (and a real process for
restarts and daemon shutdown)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from aiosvc.app import create_app
from aiosvc.config import ApprovalsConfig, Config
from tests.conftest import ClientFactory
from tests.helpers import Client, create_session, wait_for
from tests.serving import Server

APPROVAL_KEYS = {
    "id",
    "session_id",
    "message_id",
    "tool",
    "input",
    "status",
    "created_at",
    "resolved_at",
}


async def history(client: Client, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/sessions/{session_id}/messages")
    data: list[dict[str, Any]] = (await response.json())["data"]
    return data


async def pending_approval(client: Client, session_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def appeared() -> bool:
        response = await client.get(f"/api/v1/approvals?status=pending&session_id={session_id}")
        found[:] = (await response.json())["data"]
        return bool(found)

    await wait_for(appeared)
    return found[0]


async def session_status(client: Client, session_id: str) -> str:
    response = await client.get(f"/api/v1/sessions/{session_id}")
    status: str = (await response.json())["data"]["status"]
    return status


async def test_approve_and_deny_over_rest(client: Client) -> None:
    session = await create_session(client)
    url = f"/api/v1/sessions/{session['id']}/messages"
    sent = (await (await client.post(url, json={"content": '/tool shell {"cmd": "ls"}'})).json())[
        "data"
    ]
    approval = await pending_approval(client, session["id"])
    assert set(approval) == APPROVAL_KEYS
    assert (approval["tool"], approval["input"], approval["message_id"], approval["status"]) == (
        "shell",
        {"cmd": "ls"},
        sent["reply_id"],
        "pending",
    )
    assert approval["resolved_at"] is None
    assert await session_status(client, session["id"]) == "waiting_approval"
    listing = await (await client.get("/api/v1/approvals")).json()
    assert (listing["total"], listing["limit"], listing["offset"]) == (1, 50, 0)
    response = await client.post(
        f"/api/v1/approvals/{approval['id']}", json={"decision": "approve"}
    )
    assert response.status == 200
    resolved = (await response.json())["data"]
    assert (resolved["status"], resolved["id"]) == ("approved", approval["id"])
    assert resolved["resolved_at"] is not None

    async def replied() -> bool:
        messages = await history(client, session["id"])
        return len(messages) == 2 and messages[1]["status"] == "complete"

    await wait_for(replied)
    assert (await history(client, session["id"]))[1]["content"] == "tool shell approved"
    again = await client.post(f"/api/v1/approvals/{approval['id']}", json={"decision": "deny"})
    assert again.status == 409
    assert (await again.json())["error"] == {
        "code": "already_resolved",
        "message": f"approval {approval['id']!r} is already approved",
        "status": 409,
        "details": {"status": "approved"},
    }
    await client.post(url, json={"content": "/tool rm"})
    second = await pending_approval(client, session["id"])
    await client.post(f"/api/v1/approvals/{second['id']}", json={"decision": "deny"})

    async def denied() -> bool:
        messages = await history(client, session["id"])
        return len(messages) == 4 and messages[3]["content"] == "tool rm denied"

    await wait_for(denied)


async def test_bad_approval_requests(client: Client) -> None:
    response = await client.post("/api/v1/approvals/apr_nope", json={"decision": "approve"})
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    session = await create_session(client)
    await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "/tool x"})
    approval = await pending_approval(client, session["id"])
    for body in ({"decision": "maybe"}, {}, {"decision": "approve", "extra": 1}):
        response = await client.post(f"/api/v1/approvals/{approval['id']}", json=body)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "validation_error"
    response = await client.get("/api/v1/approvals?status=sideways")
    assert response.status == 400
    assert (await pending_approval(client, session["id"]))["status"] == "pending"


async def test_concurrent_decisions_resolve_exactly_once(client: Client) -> None:
    session = await create_session(client)
    await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "/tool t"})
    approval = await pending_approval(client, session["id"])
    url = f"/api/v1/approvals/{approval['id']}"
    responses = await asyncio.gather(
        *(client.post(url, json={"decision": d}) for d in ["approve", "deny"] * 5)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [409] * 9
    winner = next(r for r in responses if r.status == 200)
    decided = (await winner.json())["data"]["status"]
    final = await (await client.get(f"/api/v1/approvals?session_id={session['id']}")).json()
    assert [a["status"] for a in final["data"]] == [decided]


async def test_unanswered_approvals_expire_and_the_reply_says_so(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    quick = attrs.evolve(config, approvals=ApprovalsConfig(timeout_s=0.3))
    client = await aiohttp_client(create_app(quick))
    session = await create_session(client)
    await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "/tool t"})

    async def replied() -> bool:
        messages = await history(client, session["id"])
        return len(messages) == 2 and messages[1]["status"] == "complete"

    await wait_for(replied)
    assert (await history(client, session["id"]))[1]["content"] == "tool t expired"
    approvals = (await (await client.get("/api/v1/approvals")).json())["data"]
    assert [a["status"] for a in approvals] == ["expired"]
    assert await session_status(client, session["id"]) == "idle"


async def test_cancel_while_waiting_for_approval(client: Client) -> None:
    session = await create_session(client)
    base = f"/api/v1/sessions/{session['id']}"
    sent = (await (await client.post(base + "/messages", json={"content": "/tool t"})).json())[
        "data"
    ]
    approval = await pending_approval(client, session["id"])
    response = await client.post(base + "/cancel")
    assert (await response.json())["data"]["cancelled"] == [sent["reply_id"]]

    async def cancelled() -> bool:
        messages = await history(client, session["id"])
        return len(messages) == 2 and messages[1]["status"] == "cancelled"

    await wait_for(cancelled)
    listed = await (await client.get(f"/api/v1/approvals?session_id={session['id']}")).json()
    assert [(a["id"], a["status"]) for a in listed["data"]] == [(approval["id"], "expired")]
    late = await client.post(f"/api/v1/approvals/{approval['id']}", json={"decision": "approve"})
    assert late.status == 409
    assert await session_status(client, session["id"]) == "idle"


async def test_cancel_while_queued_means_it_never_starts(client: Client) -> None:
    session = await create_session(client, agent="slow")
    base = f"/api/v1/sessions/{session['id']}"
    first = (await (await client.post(base + "/messages", json={"content": "a b c d"})).json())[
        "data"
    ]
    second = (await (await client.post(base + "/messages", json={"content": "queued"})).json())[
        "data"
    ]
    response = await client.post(base + "/cancel")
    assert set((await response.json())["data"]["cancelled"]) == {
        first["reply_id"],
        second["reply_id"],
    }

    async def settled() -> bool:
        messages = await history(client, session["id"])
        return len(messages) == 4 and all(m["status"] != "streaming" for m in messages)

    await wait_for(settled)
    replies = {m["id"]: m for m in await history(client, session["id"])}
    never = replies[second["reply_id"]]
    assert (never["status"], never["content"], never["error"]["code"]) == (
        "cancelled",
        "",
        "cancelled",
    )
    command = (await (await client.get(f"/api/v1/commands/{second['command_id']}")).json())["data"]
    assert command["status"] == "failed"
    assert command["error"] == {"code": "cancelled", "message": "the reply was cancelled"}


async def test_pending_approvals_expire_across_a_restart(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/v1/sessions", json={}) as response:
            session_id = (await response.json())["data"]["id"]
        async with http.post(
            f"{server.url}/api/v1/sessions/{session_id}/messages", json={"content": "/tool t"}
        ) as response:
            reply_id = (await response.json())["data"]["reply_id"]
        async with asyncio.timeout(10):
            while True:
                async with http.get(server.url + "/api/v1/approvals?status=pending") as response:
                    if (await response.json())["total"]:
                        break
                await asyncio.sleep(0.05)
        server.kill()
        again = Server(db_path, port=server.port)
        await again.start()
        try:
            async with http.get(again.url + "/api/v1/approvals") as response:
                approvals = (await response.json())["data"]
            assert [a["status"] for a in approvals] == ["expired"]
            assert approvals[0]["resolved_at"] is not None
            async with http.get(f"{again.url}/api/v1/sessions/{session_id}/messages") as response:
                messages = (await response.json())["data"]
            reply = next(m for m in messages if m["id"] == reply_id)
            assert (reply["status"], reply["error"]["code"]) == ("failed", "interrupted")
            async with http.get(f"{again.url}/api/v1/sessions/{session_id}") as response:
                assert (await response.json())["data"]["status"] == "idle"
        finally:
            assert await again.stop() == 0


async def test_no_agent_process_outlives_the_daemon(db_path: Path, tmp_path: Path) -> None:
    program = tmp_path / "long.py"
    program.write_text(
        "import os, signal, subprocess, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(os.getpid(), child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        "[server]\nshutdown_timeout_s = 0.5\n\n"
        f'[agents.long]\nkind = "command"\nargv = ["{sys.executable}", "{program}"]\n'
        "kill_grace_s = 0.5\n"
    )
    server = Server(db_path, config=config)
    await server.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/v1/sessions", json={"agent": "long"}) as response:
            session_id = (await response.json())["data"]["id"]
        url = f"{server.url}/api/v1/sessions/{session_id}/messages"
        async with http.post(url, json={"content": "go"}) as response:
            assert response.status == 202
        pids: list[int] = []
        async with asyncio.timeout(15):
            while not pids:
                async with http.get(url) as response:
                    messages = (await response.json())["data"]
                if len(messages) == 2 and len(messages[1]["content"].split()) == 2:
                    pids = [int(p) for p in messages[1]["content"].split()]
                await asyncio.sleep(0.05)
    assert await server.stop(signal.SIGTERM) == 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "State:\tZ" in status.read_text(), pid

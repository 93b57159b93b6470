"""The ``command`` agent made practical, end to end through a real ``aiosvc serve``: the
conversation file, and the line protocol through which a program reports tool use and waits
for a person's decision (with the example agent shipped in ``config/examples``)."""

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

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "examples" / "protocol-agent.py"
PY = sys.executable

DUMP = """
import json, os
path = os.environ["AIOSVC_CONVERSATION"]
with open(path) as file:
    doc = json.load(file)
print(json.dumps({"path": path, "mode": oct(os.stat(path).st_mode & 0o777), "doc": doc,
                  "fd": os.environ.get("AIOSVC_PROTOCOL_FD")}))
"""

NOISY = """
import json, os
sock = os.fdopen(int(os.environ["AIOSVC_PROTOCOL_FD"]), "r+b", buffering=0)
for junk in (b"not json", b"[1, 2]", b'{"type": "other"}', b'{"type": "tool_use"}',
             b'{"type": "tool_use", "tool": ""}', b'"' + b"x" * 300_000 + b'"', b"\\xff\\xfe", b""):
    sock.write(junk + b"\\n")
sock.write(json.dumps({"type": "tool_use", "tool": "net", "input": {"host": "h"},
                       "id": "q1"}).encode() + b"\\n")
answer = b""
while not answer.endswith(b"\\n"):
    answer += sock.read(1)
print(answer.decode().strip(), flush=True)
"""

WAITER = """
import json, os, signal, subprocess
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "60"])
print(os.getpid(), child.pid, flush=True)
sock = os.fdopen(int(os.environ["AIOSVC_PROTOCOL_FD"]), "r+b", buffering=0)
sock.write(b'{"type": "tool_use", "tool": "wait", "input": {}}\\n')
sock.read(1)
import time; time.sleep(60)
"""


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    scripts = {}
    for name, body in (("dump", DUMP), ("noisy", NOISY), ("waiter", WAITER)):
        path = tmp_path / f"{name}.py"
        path.write_text(body)
        scripts[name] = path
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        f'[agents.reader]\nkind = "command"\nargv = ["{PY}", "{EXAMPLE}"]\nprotocol = true\n\n'
        f'[agents.plain]\nkind = "command"\nargv = ["{PY}", "{EXAMPLE}"]\n\n'
        f'[agents.dump]\nkind = "command"\nargv = ["{PY}", "{scripts["dump"]}"]\n\n'
        f'[agents.noisy]\nkind = "command"\nargv = ["{PY}", "{scripts["noisy"]}"]\n'
        "protocol = true\n\n"
        f'[agents.waiter]\nkind = "command"\nargv = ["{PY}", "{scripts["waiter"]}"]\n'
        "protocol = true\nkill_grace_s = 0.5\n"
    )
    server = Server(tmp_path / "aiosvc.db", config=config)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(http, server)
    finally:
        assert await server.stop() == 0


async def session(api: Api, agent: str) -> str:
    status, body = await api.call("POST", "/api/v1/sessions", {"agent": agent})
    assert status == 201, body
    session_id: str = body["data"]["id"]
    return session_id


async def send(api: Api, session_id: str, content: str) -> None:
    status, body = await api.call(
        "POST", f"/api/v1/sessions/{session_id}/messages", {"content": content}
    )
    assert status == 202, body


async def events_until(ws: aiohttp.ClientWebSocketResponse, last: str) -> list[dict[str, Any]]:
    """The events received up to and including the first of type ``last``."""
    seen = []
    async with asyncio.timeout(20):
        while True:
            frame = await ws.receive_json()
            if frame["type"] == "event":
                seen.append(frame["event"])
                if frame["event"]["type"] == last:
                    return seen


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def test_the_example_agent_asks_and_acts_once_approved(api: Api, tmp_path: Path) -> None:
    secret = tmp_path / "notes.txt"
    secret.write_text("first line\nsecond line\n")
    session_id = await session(api, "reader")
    async with api.http.ws_connect(f"{api.server.url}/api/v1/sessions/{session_id}/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await send(api, session_id, f"read: {secret}")
        seen = await events_until(ws, "approval.requested")
        tool_use = next(e for e in seen if e["type"] == "tool.use")
        approval = seen[-1]["data"]
        assert tool_use["data"]["tool"] == approval["tool"] == "read_file"
        assert tool_use["data"]["input"] == approval["input"] == {"path": str(secret)}
        assert tool_use["data"]["message_id"] == approval["message_id"]
        await ws.send_json({"op": "approve", "approval_id": approval["id"], "decision": "approve"})
        completed = (await events_until(ws, "message.completed"))[-1]["data"]
    assert completed["status"] == "complete"
    assert completed["content"] == f"asking to read {secret}\n\nfirst line\nsecond line\n"
    # Denied, it says so and does not read.
    await send(api, session_id, f"read: {secret}")
    async with asyncio.timeout(20):
        while not (found := await api.call("GET", "/api/v1/approvals?status=pending"))[1]["data"]:
            await asyncio.sleep(0.05)
    await api.call("POST", f"/api/v1/approvals/{found[1]['data'][0]['id']}", {"decision": "deny"})
    replies = await api.replies(session_id, "complete", 2)
    assert replies[-1]["content"] == f"asking to read {secret}\n\nreading was denied\n"


async def test_the_example_agent_without_the_protocol_fails_clearly(api: Api) -> None:
    session_id = await session(api, "plain")
    await send(api, session_id, "read: /etc/hostname")
    (failed,) = await api.replies(session_id, "failed")
    assert failed["error"]["code"] == "exit_status"
    assert "needs protocol = true" in failed["error"]["message"]
    await send(api, session_id, "hello")
    (complete,) = await api.replies(session_id, "complete")
    # The failed reply is left out of the history the program sees.
    assert complete["content"] == "2 messages so far; you said: hello\n"


async def test_the_conversation_file_holds_the_history_and_is_removed(api: Api) -> None:
    session_id = await session(api, "dump")
    await send(api, session_id, "first")
    await api.replies(session_id, "complete")
    await send(api, session_id, "second")
    replies = await api.replies(session_id, "complete", 2)
    dumped = json.loads(replies[-1]["content"])
    assert dumped["mode"] == "0o600"
    assert dumped["fd"] is None  # no protocol configured: no descriptor
    assert dumped["doc"] == {
        "session": {
            "id": session_id,
            "title": "",
            "agent": "dump",
            "project": None,
            "model": None,
            "system_prompt": None,
        },
        "reply_id": replies[-1]["id"],
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": replies[0]["content"]},
            {"role": "user", "content": "second"},
        ],
    }
    assert not Path(dumped["path"]).exists()
    assert not Path(json.loads(replies[0]["content"])["path"]).exists()


async def test_malformed_protocol_lines_are_ignored_and_logged(api: Api) -> None:
    session_id = await session(api, "noisy")
    await send(api, session_id, "go")
    async with asyncio.timeout(20):
        while not (found := await api.call("GET", "/api/v1/approvals?status=pending"))[1]["data"]:
            await asyncio.sleep(0.05)
    (approval,) = found[1]["data"]
    assert (approval["tool"], approval["input"]) == ("net", {"host": "h"})
    await api.call("POST", f"/api/v1/approvals/{approval['id']}", {"decision": "approve"})
    (reply,) = await api.replies(session_id, "complete")
    assert json.loads(reply["content"]) == {
        "type": "approval",
        "decision": "approve",
        "status": "approved",
        "id": "q1",
    }
    # Logged, throttled: the first at once, the other six counted on a line of their own.
    async with asyncio.timeout(15):
        while True:
            lines = [e for e in api.server.events() if e["event"] == "agent_protocol_line_ignored"]
            if len(lines) == 2:
                break
            await asyncio.sleep(0.1)
    assert [(e["reason"], e.get("repeated"), e["level"]) for e in lines] == [
        ("not_json", None, "warning"),
        ("not_json", 6, "warning"),  # the last one left out: the undecodable bytes
    ]
    assert lines[0]["program"] == PY


async def test_cancel_while_the_program_waits_stops_its_whole_group(api: Api) -> None:
    session_id = await session(api, "waiter")
    await send(api, session_id, "go")
    async with asyncio.timeout(20):
        while not (await api.call("GET", "/api/v1/approvals?status=pending"))[1]["data"]:
            await asyncio.sleep(0.05)
    messages = await api.messages(session_id)
    pids = [int(p) for p in messages[-1]["content"].split()] if messages[-1]["content"] else []
    if not pids:  # the deltas may still be on their way to the history
        await asyncio.sleep(0.5)
        pids = [int(p) for p in (await api.messages(session_id))[-1]["content"].split()]
    assert len(pids) == 2 and not any(gone(pid) for pid in pids)
    status, _ = await api.call("POST", f"/api/v1/sessions/{session_id}/cancel")
    assert status == 202
    (cancelled,) = await api.replies(session_id, "cancelled")
    assert cancelled["content"].split() == [str(p) for p in pids]
    (approval,) = (await api.call("GET", "/api/v1/approvals"))[1]["data"]
    assert approval["status"] == "expired"
    async with asyncio.timeout(10):
        while not all(gone(pid) for pid in pids):
            await asyncio.sleep(0.05)

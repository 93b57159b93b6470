"""Tool calls of the ``openai`` agent under a real ``aiosvc serve``, against the fake upstream
and the test MCP server: assembled from streamed pieces, announced, approved (or not), run,
answered, stored; every way a call goes wrong is the call's error, never the reply's; cancel
in each state ends the reply cancelled with nothing left running."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from tests.fake_openai import SLOW_FIRST, FakeOpenAI, tools_answer, usage_of
from tests.tools_harness import (
    TOOLS,
    Rig,
    alive,
    calls,
    command_line,
    descendants,
    gone,
    serve_fake,
    session_events,
    start_rig,
    stop_rig,
)

Upstream = tuple[FakeOpenAI, str]
DENIED = "the call of t.add was denied by the user"
EXPIRED = "the call of t.add was not approved: nobody answered the request in time"


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> Upstream:
    return await serve_fake(aiohttp_server)


async def pending_approval(rig: Rig, session_id: str) -> dict[str, Any]:
    """The session's pending approval, once there is one."""
    path = f"/api/v1/approvals?status=pending&session_id={session_id}"
    async with asyncio.timeout(30):
        while True:
            _, body = await rig.api.call("GET", path)
            if body["data"]:
                found: dict[str, Any] = body["data"][0]
                return found
            await asyncio.sleep(0.05)


async def tool_messages(rig: Rig, session_id: str) -> list[dict[str, Any]]:
    """The session's ``tool`` messages, oldest first."""
    return [m for m in await rig.api.messages(session_id) if m["role"] == "tool"]


def sleepers(rig: Rig) -> list[int]:
    """``sleep`` processes below the daemon (the ``hang`` and ``spawn`` tools' children)."""
    assert rig.server.process is not None
    return [p for p in descendants(rig.server.process.pid) if command_line(p).startswith("sleep")]


async def test_streamed_calls_are_assembled_run_answered_and_stored(
    tmp_path: Path, upstream: Upstream
) -> None:
    rig = await start_rig(tmp_path, upstream)
    try:
        session_id = await rig.api.session_for("auto")
        prompt = calls(
            ("t__add", '{"a": 2, "b": 3}'),
            ("t__echo", '{"text": "hi there"}'),
            ("t__add", '{"a": 1'),  # cut short: not JSON
            ("t__nope", "{}"),
            ("t__fail", '{"message": "no"}'),
            ("t__big", '{"kib": 100}'),
            interleave=True,  # the calls' pieces arrive mixed, told apart by index
        )
        sent = await rig.api.send(session_id, prompt)
        reply_id = sent["reply_id"]
        events = [e async for e in session_events(rig, session_id)]
        tool_events = [e for e in events if e["type"].startswith("tool.")]
        uses = [e["data"] for e in tool_events if e["type"] == "tool.use"]
        results = [e["data"] for e in tool_events if e["type"] == "tool.result"]
        # each call: announced, then answered, one after another in the model's order
        assert [e["type"] for e in tool_events] == ["tool.use", "tool.result"] * 6
        assert uses == [
            {"message_id": reply_id, "call_id": f"call_0_{index}", "tool": tool, "input": given}
            for index, (tool, given) in enumerate(
                [
                    ("t.add", {"a": 2, "b": 3}),
                    ("t.echo", {"text": "hi there"}),
                    ("t.add", {"arguments": '{"a": 1'}),
                    ("t__nope", {}),
                    ("t.fail", {"message": "no"}),
                    ("t.big", {"kib": 100}),
                ]
            )
        ]
        assert all(
            set(r) == {"message_id", "call_id", "tool", "output", "is_error"} for r in results
        )
        assert [(r["call_id"], r["tool"], r["is_error"]) for r in results] == [
            ("call_0_0", "t.add", False),
            ("call_0_1", "t.echo", False),
            ("call_0_2", "t.add", True),
            ("call_0_3", "t__nope", True),
            ("call_0_4", "t.fail", True),
            ("call_0_5", "t.big", False),
        ]
        outputs = [r["output"] for r in results]
        assert outputs[:2] == ["5", "hi there"]
        assert outputs[2].startswith("the arguments are not valid JSON: ")
        assert outputs[3] == "unknown tool 't__nope'"
        assert outputs[4] == "Error executing tool fail"
        assert len(outputs[5].encode()) == 64 * 1024  # cut at 64 KiB
        assert outputs[5].startswith("0123456789abcdef")
        assert events[-1]["type"] == "message.completed"

        # what went upstream: the tools, then the calls and their results
        first, second = rig.fake.of_model("tools")
        assert [t["function"]["name"] for t in first.body["tools"]] == [f"t__{n}" for n in TOOLS]
        assert first.body["tools"][0]["type"] == "function"
        assert first.body["tools"][0]["function"]["description"] == "Add two integers."
        assert first.body["stream_options"] == {"include_usage": True}
        assistant = second.body["messages"][1]
        assert assistant["role"] == "assistant"
        assert [
            (c["id"], c["function"]["name"], c["function"]["arguments"])
            for c in assistant["tool_calls"]
        ] == [
            ("call_0_0", "t__add", '{"a": 2, "b": 3}'),
            ("call_0_1", "t__echo", '{"text": "hi there"}'),
            ("call_0_2", "t__add", '{"a": 1'),
            ("call_0_3", "t__nope", "{}"),
            ("call_0_4", "t__fail", '{"message": "no"}'),
            ("call_0_5", "t__big", '{"kib": 100}'),
        ]
        answers = second.body["messages"][2:]
        assert [(m["role"], m["tool_call_id"]) for m in answers] == [
            ("tool", f"call_0_{i}") for i in range(6)
        ]
        assert [m["content"] for m in answers[:2]] == ["5", "hi there"]
        assert answers[2]["content"] == "error: " + outputs[2]
        assert answers[3]["content"] == "error: unknown tool 't__nope'"

        # what was stored: a tool message per call, and the reply with the usage of both rounds
        stored = await tool_messages(rig, session_id)
        assert [m["content"] for m in stored] == outputs
        assert [m["error"] and m["error"]["code"] for m in stored] == [
            None,
            None,
            "invalid_arguments",
            "unknown_tool",
            "tool_error",
            None,
        ]
        assert {(m["status"], m["usage"]) for m in stored} == {("complete", None)}
        [reply] = await rig.api.replies(session_id, "complete")
        assert reply["content"] == tools_answer(second.body)
        rounds = [usage_of(first.body), usage_of(second.body)]
        assert reply["usage"] == {
            "input_tokens": sum(u["prompt_tokens"] for u in rounds),
            "output_tokens": sum(u["completion_tokens"] for u in rounds),
        }
        _, body = await rig.api.call("GET", f"/api/v1/sessions/{session_id}")
        assert body["data"]["message_count"] == 2 + 6
    finally:
        await stop_rig(rig)


async def test_calls_are_approved_denied_or_expire(tmp_path: Path, upstream: Upstream) -> None:
    rig = await start_rig(tmp_path, upstream, approval_timeout_s=2)
    try:
        session_id = await rig.api.session_for("ask")
        add = calls(("t__add", '{"a": 2, "b": 3}'))
        outcomes = []
        for decision in ("approve", "deny", None):
            sent = await rig.api.send(session_id, add)
            approval = await pending_approval(rig, session_id)
            assert (approval["tool"], approval["input"]) == ("t.add", {"a": 2, "b": 3})
            assert approval["message_id"] == sent["reply_id"]
            _, body = await rig.api.call("GET", f"/api/v1/sessions/{session_id}")
            assert body["data"]["status"] == "waiting_approval"
            if decision is not None:
                status, body = await rig.api.call(
                    "POST", f"/api/v1/approvals/{approval['id']}", {"decision": decision}
                )
                assert status == 200, body
            events = [e async for e in session_events(rig, session_id, sent["reply_id"])]
            mine = [e for e in events if e["data"].get("message_id") == sent["reply_id"]]
            assert [e["type"] for e in mine if e["type"].startswith("tool.")] == [
                "tool.use",
                "tool.result",
            ]
            [result] = [e["data"] for e in mine if e["type"] == "tool.result"]
            outcomes.append((result["is_error"], result["output"]))
            _, body = await rig.api.call("GET", f"/api/v1/approvals?session_id={session_id}")
            assert body["data"][0]["status"] == {"approve": "approved", "deny": "denied"}.get(
                decision or "", "expired"
            )
        assert outcomes == [(False, "5"), (True, DENIED), (True, EXPIRED)]
        assert [
            m["status"] for m in await rig.api.messages(session_id) if m["role"] == "assistant"
        ] == ["complete"] * 3
        _, body = await rig.api.call("GET", f"/api/v1/sessions/{session_id}")
        assert body["data"]["status"] == "idle"
    finally:
        await stop_rig(rig)


async def test_cancel_ends_the_reply_in_every_state_with_nothing_left_running(
    tmp_path: Path, upstream: Upstream
) -> None:
    rig = await start_rig(tmp_path, upstream)
    api = rig.api
    try:
        # 1. while the model streams
        slow = await api.session_for("slow")
        await api.send(slow, "hello")
        async with asyncio.timeout(20):
            while SLOW_FIRST not in "".join(m["content"] for m in await api.messages(slow)):
                await asyncio.sleep(0.05)
        await api.call("POST", f"/api/v1/sessions/{slow}/cancel")
        [reply] = await api.replies(slow, "cancelled")
        assert reply["error"]["code"] == "cancelled"
        [record] = rig.fake.of_model("slow")
        await asyncio.wait_for(record.client_gone.wait(), 10)

        # 2. while it waits for an approval
        ask = await api.session_for("ask")
        await api.send(ask, calls(("t__add", '{"a": 2, "b": 3}')))
        approval = await pending_approval(rig, ask)
        await api.call("POST", f"/api/v1/sessions/{ask}/cancel")
        [reply] = await api.replies(ask, "cancelled")
        _, body = await api.call("GET", f"/api/v1/approvals?session_id={ask}")
        assert [(a["id"], a["status"]) for a in body["data"]] == [(approval["id"], "expired")]
        assert await tool_messages(rig, ask) == []

        # 3. while a tool runs: the server is told to stop it, and its child ends
        auto = await api.session_for("auto")
        await api.send(auto, calls(("t__hang", '{"seconds": 600}')))
        async with asyncio.timeout(20):
            while not sleepers(rig):
                await asyncio.sleep(0.05)
        children = sleepers(rig)
        await api.call("POST", f"/api/v1/sessions/{auto}/cancel")
        [reply] = await api.replies(auto, "cancelled")
        await gone(children)
        assert await tool_messages(rig, auto) == []

        # 4. a tool that runs too long is the call's error (tool_timeout_s = 3)
        await api.send(auto, calls(("t__hang", '{"seconds": 600}')))
        await api.replies(auto, "complete")
        [message] = await tool_messages(rig, auto)
        assert message["error"]["code"] == "tool_timeout"
        assert message["content"] == "the tool ran longer than 3 s"
        await gone(sleepers(rig))

        # the server is still there, and still answers
        await api.send(auto, calls(("t__add", '{"a": 1, "b": 1}')))
        await api.replies(auto, "complete", count=2)
        assert [m["content"] for m in await tool_messages(rig, auto)][-1] == "2"
        assert sleepers(rig) == []
        _, body = await api.call("GET", "/api/v1/mcp")
        assert [s["status"] for s in body["data"]] == ["failed", "connected"]
    finally:
        await stop_rig(rig)


async def test_rounds_stop_at_max_tool_rounds(tmp_path: Path, upstream: Upstream) -> None:
    rig = await start_rig(tmp_path, upstream)
    try:
        session_id = await rig.api.session_for("loop")
        await rig.api.send(session_id, calls(("t__add", '{"a": 1, "b": 2}')))
        [reply] = await rig.api.replies(session_id, "complete")
        requests = rig.fake.of_model("tools-loop")
        # two rounds with tools (max_tool_rounds = 2), then one without, for the answer
        assert [("tools" in r.body) for r in requests] == [True, True, False]
        assert [t["function"]["name"] for t in requests[0].body["tools"]] == ["t__add"]
        assert reply["content"] == "no more tools"
        assert [m["content"] for m in await tool_messages(rig, session_id)] == ["3", "3"]
        assert json.loads(json.dumps(reply["usage"]))["output_tokens"] == 3 * 7
        assert not any(alive(p) for p in sleepers(rig))
    finally:
        await stop_rig(rig)

"""The ``openai`` agent end to end: the real app through ``create_app`` on a real socket, talking
to a fake OpenAI-compatible server on loopback (tests/fake_openai.py). Exact wire shapes, both
ways: what aiosvc answers its clients, and what it sent upstream."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from typing import Any

import aiohttp
import attrs
import pytest
import structlog
from aiohttp import WSMsgType
from pytest_aiohttp import AiohttpServer

from aiosvc import __version__
from aiosvc.app import create_app
from aiosvc.config import AgentConfig, AgentsConfig, Config, EchoAgentConfig, OpenAIAgentConfig
from tests import fake_openai
from tests.conftest import ClientFactory
from tests.fake_openai import FakeOpenAI, Recorded
from tests.helpers import MESSAGE_KEYS, TIME, Client, create_session

KEY_ENV = "AIOSVC_TEST_OPENAI_KEY"
#: Unique per run, so that finding it anywhere can only mean it leaked.
KEY = "sk-test-" + secrets.token_hex(16)
TIMEOUT_S = 30.0  # sock_read: generous for every model but the timeout test's
SHORT_TIMEOUT_S = 0.3
#: agent name -> the fake's model it asks for (each an openai agent on the fake)
MODELS = {
    "gpt": "echo",
    "gpt-history": "history",
    "gpt-slow": "slow",
    "gpt-http500": "http500",
    "gpt-http401": "http401",
    "gpt-malformed": "malformed",
    "gpt-cut": "cut",
    "gpt-nodone": "nodone",
    "gpt-nonstream": "nonstream",
    "gpt-errorchunk": "errorchunk",
    "gpt-html": "html",
}


@attrs.frozen
class Upstream:
    """The fake server and the URLs the agents are configured with."""

    fake: FakeOpenAI
    base_url: str  # http://127.0.0.1:PORT/v1
    refused_url: str  # a loopback port nothing listens on

    @property
    def completions(self) -> str:
        return self.base_url + "/chat/completions"


def closed_port() -> int:
    """A loopback port that was free a moment ago and that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> Upstream:
    fake = FakeOpenAI()
    server = await aiohttp_server(fake.app())
    base_url = str(server.make_url("/v1"))
    assert base_url.startswith("http://127.0.0.1:")
    return Upstream(fake, base_url, f"http://127.0.0.1:{closed_port()}/v1")


def openai_config(config: Config, upstream: Upstream) -> Config:
    """The test config with an openai agent per fake model, plus the odd ones."""

    def agent(model: str, **changes: Any) -> OpenAIAgentConfig:
        settings: dict[str, Any] = {
            "base_url": upstream.base_url,
            "model": model,
            "api_key_env": KEY_ENV,
            "timeout_s": TIMEOUT_S,
        }
        return OpenAIAgentConfig(**(settings | changes))

    backends: dict[str, AgentConfig] = {"echo": EchoAgentConfig()}
    backends |= {name: agent(model) for name, model in MODELS.items()}
    backends["gpt-timeout"] = agent("slow", timeout_s=SHORT_TIMEOUT_S)
    backends["gpt-refused"] = agent("echo", base_url=upstream.refused_url)
    backends["gpt-nokeyenv"] = agent("echo", api_key_env=None)
    return attrs.evolve(config, agents=AgentsConfig(default="echo", backends=backends))


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory,
    config: Config,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> Client:
    """The real app, its openai agents on the fake, the key in the environment."""
    monkeypatch.setenv(KEY_ENV, KEY)
    return await aiohttp_client(create_app(openai_config(config, upstream)))


async def ask(client: Client, agent: str, content: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new session on ``agent``; send ``content`` with ``?wait=true``; the session and the
    finished reply."""
    session = await create_session(client, agent=agent)
    return session, await ask_again(client, session, content)


async def ask_again(client: Client, session: dict[str, Any], content: str) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/sessions/{session['id']}/messages?wait=true", json={"content": content}
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert set(body) == {"data"}
    reply: dict[str, Any] = body["data"]
    assert set(reply) == MESSAGE_KEYS
    assert reply["session_id"] == session["id"]
    assert reply["role"] == "assistant"
    assert TIME.fullmatch(reply["created_at"])
    assert TIME.fullmatch(reply["completed_at"])
    return reply


async def history(client: Client, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/sessions/{session_id}/messages")
    assert response.status == 200
    messages: list[dict[str, Any]] = (await response.json())["data"]
    return messages


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type is WSMsgType.TEXT, message
    data: dict[str, Any] = message.json()
    return data


async def events_until(ws: aiohttp.ClientWebSocketResponse, last: str) -> list[dict[str, Any]]:
    """The session socket's events up to and including the first of type ``last``."""
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] != last:
        frame = await receive(ws)
        assert frame["type"] == "event", frame
        seen.append(frame["event"])
    return seen


async def finished(record: Recorded) -> None:
    """Wait (generously) for the fake's handler of ``record`` to end."""
    await asyncio.wait_for(record.finished.wait(), 10)


# ---- a reply streams


async def test_a_reply_streams_from_the_upstream(client: Client, upstream: Upstream) -> None:
    session, reply = await ask(client, "gpt", "hello there, world")
    assert reply["status"] == "complete"
    assert reply["error"] is None
    assert reply["content"] == "you said: hello there, world"
    (record,) = upstream.fake.requests
    assert len(record.sent) > 2  # the fake really sent it in pieces
    assert "".join(record.sent) == reply["content"]
    assert [
        (m["role"], m["content"], m["status"]) for m in await history(client, session["id"])
    ] == [
        ("user", "hello there, world", "complete"),
        ("assistant", "you said: hello there, world", "complete"),
    ]
    after = (await (await client.get(f"/api/v1/sessions/{session['id']}")).json())["data"]
    assert (after["status"], after["message_count"]) == ("idle", 2)


async def test_deltas_arrive_over_the_websocket_before_completed(client: Client) -> None:
    session = await create_session(client, agent="gpt")
    topic = f"session:{session['id']}"
    async with client.ws_connect(f"/api/v1/sessions/{session['id']}/ws") as ws:
        assert (await receive(ws))["type"] == "hello"
        sent = await client.post(
            f"/api/v1/sessions/{session['id']}/messages", json={"content": "stream me, please"}
        )
        assert sent.status == 202
        reply_id = (await sent.json())["data"]["reply_id"]
        seen = await events_until(ws, "message.completed")
    types = [e["type"] for e in seen]
    deltas = [e for e in seen if e["type"] == "message.delta"]
    assert len(deltas) > 1
    started = types.index("message.started")
    completed = types.index("message.completed")
    assert all(started < seen.index(d) < completed for d in deltas)
    for delta in deltas:
        assert set(delta) == {"id", "type", "topic", "ts", "data"}
        assert delta["topic"] == topic
        assert TIME.fullmatch(delta["ts"])
        assert set(delta["data"]) == {"message_id", "delta"}
        assert delta["data"]["message_id"] == reply_id
        assert isinstance(delta["data"]["delta"], str) and delta["data"]["delta"]
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    final = seen[completed]["data"]
    assert set(final) == MESSAGE_KEYS
    assert (final["id"], final["status"], final["error"]) == (reply_id, "complete", None)
    assert final["content"] == "you said: stream me, please"
    assert "".join(d["data"]["delta"] for d in deltas) == final["content"]


# ---- what the upstream receives


async def test_the_request_carries_model_key_stream_and_history(
    client: Client, upstream: Upstream
) -> None:
    session, first = await ask(client, "gpt", "first question")
    second = await ask_again(client, session, "second question")
    assert first["content"] == "you said: first question"
    assert second["content"] == "you said: second question"
    one, two = upstream.fake.requests
    for record in (one, two):
        assert (record.method, record.path) == ("POST", "/v1/chat/completions")
        assert record.headers["Authorization"] == f"Bearer {KEY}"
        assert record.headers["Accept"] == "text/event-stream"
        assert record.headers["Content-Type"].startswith("application/json")
        assert record.headers["User-Agent"] == f"aiosvc/{__version__}"
    assert one.body == {
        "model": "echo",
        "messages": [{"role": "user", "content": "first question"}],
        "stream": True,
    }
    assert two.body == {
        "model": "echo",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "you said: first question"},
            {"role": "user", "content": "second question"},
        ],
        "stream": True,
    }


async def test_the_history_model_sees_the_conversation(client: Client, upstream: Upstream) -> None:
    session, first = await ask(client, "gpt-history", "one")
    assert json.loads(first["content"]) == [{"role": "user", "content": "one"}]
    second = await ask_again(client, session, "two")
    assert json.loads(second["content"]) == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": "two"},
    ]
    assert [r.body["messages"] for r in upstream.fake.requests] == [
        json.loads(first["content"]),
        json.loads(second["content"]),
    ]


async def test_failed_replies_are_left_out_of_the_history(
    client: Client, upstream: Upstream
) -> None:
    session, first = await ask(client, "gpt-errorchunk", "one")
    assert first["status"] == "failed"
    await ask_again(client, session, "two")
    assert [r.body["messages"] for r in upstream.fake.requests] == [
        [{"role": "user", "content": "one"}],
        [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    ]


async def test_no_authorization_without_a_key_in_the_environment(
    client: Client, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    _, reply = await ask(client, "gpt", "anyone there")
    assert (reply["status"], reply["content"]) == ("complete", "you said: anyone there")
    (record,) = upstream.fake.requests
    assert "Authorization" not in record.headers


async def test_no_authorization_when_no_key_variable_is_configured(
    client: Client, upstream: Upstream
) -> None:
    assert KEY_ENV in os.environ  # set, but this agent names no variable
    _, reply = await ask(client, "gpt-nokeyenv", "hi")
    assert (reply["status"], reply["content"]) == ("complete", "you said: hi")
    (record,) = upstream.fake.requests
    assert "Authorization" not in record.headers


# ---- every failure is a failed message with a code and a sentence


def failure(reply: dict[str, Any], code: str) -> str:
    """Check ``reply`` failed with ``code``; its error message."""
    assert reply["status"] == "failed", reply
    assert set(reply["error"]) == {"code", "message"}
    assert reply["error"]["code"] == code, reply["error"]
    message: str = reply["error"]["message"]
    assert message
    return message


async def test_an_http_error_fails_the_reply(client: Client, upstream: Upstream) -> None:
    session, reply = await ask(client, "gpt-http500", "are you up")
    message = failure(reply, "upstream_http_error")
    assert "500" in message
    assert "model overloaded" in message
    assert upstream.completions in message
    assert reply["content"] == ""
    stored = await history(client, session["id"])
    assert stored[1] == reply  # what ?wait=true answered is what was recorded
    after = (await (await client.get(f"/api/v1/sessions/{session['id']}")).json())["data"]
    assert after["status"] == "idle"

    _, reply = await ask(client, "gpt-http401", "let me in")
    message = failure(reply, "upstream_http_error")
    assert "401" in message
    assert fake_openai.HTTP401_MESSAGE in message


async def test_a_refused_connection_fails_the_reply(client: Client, upstream: Upstream) -> None:
    _, reply = await ask(client, "gpt-refused", "hello?")
    message = failure(reply, "upstream_unreachable")
    assert upstream.refused_url + "/chat/completions" in message
    assert reply["content"] == ""
    assert upstream.fake.requests == []


async def test_upstream_failures_are_logged_with_the_agent_and_the_upstream(
    client: Client, upstream: Upstream
) -> None:
    with structlog.testing.capture_logs() as captured:
        s1, overloaded = await ask(client, "gpt-http500", "are you up")
        s2, refused = await ask(client, "gpt-refused", "hello?")
        s3, silent = await ask(client, "gpt-timeout", "take your time")
    lines = [line for line in captured if line["event"] == "agent_failed"]
    about = [(line["agent"], line["session_id"], line["message_id"]) for line in lines]
    assert about == [
        ("gpt-http500", s1["id"], overloaded["id"]),
        ("gpt-refused", s2["id"], refused["id"]),
        ("gpt-timeout", s3["id"], silent["id"]),
    ]
    http_error, unreachable, timeout = lines
    assert (http_error["log_level"], http_error["code"]) == ("warning", "upstream_http_error")
    assert (http_error["url"], http_error["upstream_status"]) == (upstream.completions, 500)
    assert http_error["error"] == overloaded["error"]["message"]
    assert (unreachable["log_level"], unreachable["code"]) == ("error", "upstream_unreachable")
    assert unreachable["url"] == upstream.refused_url + "/chat/completions"
    assert "refused" in unreachable["os_error"].lower()
    assert (timeout["log_level"], timeout["code"]) == ("warning", "upstream_timeout")
    assert (timeout["url"], timeout["timeout_s"]) == (upstream.completions, SHORT_TIMEOUT_S)
    for record in upstream.fake.requests:
        await finished(record)


async def test_a_silent_upstream_times_out(client: Client, upstream: Upstream) -> None:
    _, reply = await ask(client, "gpt-timeout", "take your time")
    message = failure(reply, "upstream_timeout")
    assert upstream.completions in message
    assert "0.3" in message
    assert reply["content"] == fake_openai.SLOW_FIRST  # what came before the silence is kept
    (record,) = upstream.fake.requests
    await asyncio.wait_for(record.client_gone.wait(), 10)  # and the connection was closed
    await finished(record)
    assert record.outcome == "client_gone"


async def test_a_malformed_chunk_fails_the_reply(client: Client, upstream: Upstream) -> None:
    _, reply = await ask(client, "gpt-malformed", "say something odd")
    message = failure(reply, "malformed_stream")
    assert upstream.completions in message
    assert reply["content"] == fake_openai.PARTIAL


async def test_an_answer_that_is_not_an_event_stream_fails(client: Client) -> None:
    _, reply = await ask(client, "gpt-html", "hello")
    message = failure(reply, "malformed_stream")
    assert message.endswith("answered 'text/html', not an event stream")
    assert reply["content"] == ""


async def test_a_cut_stream_fails_the_reply(client: Client, upstream: Upstream) -> None:
    _, reply = await ask(client, "gpt-cut", "and then")
    message = failure(reply, "upstream_disconnected")
    assert upstream.completions in message
    assert reply["content"] == fake_openai.PARTIAL
    (record,) = upstream.fake.requests
    await finished(record)
    assert record.outcome == "aborted"


async def test_an_error_chunk_fails_the_reply(client: Client, upstream: Upstream) -> None:
    _, reply = await ask(client, "gpt-errorchunk", "go on")
    message = failure(reply, "upstream_error")
    assert "boom" in message
    assert reply["content"] == fake_openai.PARTIAL


@pytest.mark.parametrize(
    ("agent", "content"),
    [
        ("gpt-nodone", "".join(fake_openai.NODONE_PARTS)),
        ("gpt-nonstream", fake_openai.NONSTREAM_TEXT),
    ],
)
async def test_lenient_upstreams_still_complete(
    client: Client, upstream: Upstream, agent: str, content: str
) -> None:
    _, reply = await ask(client, agent, "whatever")
    assert (reply["status"], reply["content"], reply["error"]) == ("complete", content, None)
    (record,) = upstream.fake.requests
    assert record.body["stream"] is True


# ---- cancel


async def test_cancel_closes_the_upstream_stream(client: Client, upstream: Upstream) -> None:
    session = await create_session(client, agent="gpt-slow")
    url = f"/api/v1/sessions/{session['id']}"
    async with client.ws_connect(url + "/ws") as ws:
        assert (await receive(ws))["type"] == "hello"
        sent = await client.post(url + "/messages", json={"content": "think hard"})
        assert sent.status == 202
        reply_id = (await sent.json())["data"]["reply_id"]
        seen = await events_until(ws, "message.delta")  # the upstream's first delta is in
        assert seen[-1]["data"] == {"message_id": reply_id, "delta": fake_openai.SLOW_FIRST}
        stored = await history(client, session["id"])
        assert [(m["id"], m["status"]) for m in stored[1:]] == [(reply_id, "streaming")]
        (record,) = upstream.fake.requests
        assert not record.client_gone.is_set()

        cancelled = await client.post(url + "/cancel")
        assert cancelled.status == 202
        assert await cancelled.json() == {
            "data": {"session_id": session["id"], "cancelled": [reply_id]}
        }
        seen = await events_until(ws, "message.cancelled")
    final = seen[-1]["data"]
    assert set(final) == MESSAGE_KEYS
    assert (final["id"], final["status"], final["content"]) == (
        reply_id,
        "cancelled",
        fake_openai.SLOW_FIRST,
    )
    assert final["error"] == {"code": "cancelled", "message": "the reply was cancelled"}
    await asyncio.wait_for(record.client_gone.wait(), 10)  # the fake saw its client leave
    await finished(record)
    assert record.outcome == "client_gone"
    assert (await history(client, session["id"]))[1] == final


# ---- the agent as described, and the key kept secret


async def test_agents_lists_the_openai_agent_without_its_key(
    client: Client, upstream: Upstream
) -> None:
    response = await client.get("/api/v1/agents")
    assert response.status == 200
    text = await response.text()
    assert KEY not in text
    body = json.loads(text)
    assert (body["total"], body["limit"], body["offset"]) == (len(body["data"]), 50, 0)
    by_name = {a["name"]: a for a in body["data"]}
    assert by_name["gpt"] == {
        "name": "gpt",
        "kind": "openai",
        "default": False,
        "config": {
            "base_url": upstream.base_url,
            "model": "echo",
            "api_key_env": KEY_ENV,
            "timeout_s": TIMEOUT_S,
            "system_prompt": None,
        },
    }
    assert by_name["gpt-nokeyenv"]["config"]["api_key_env"] is None
    assert by_name["gpt-timeout"]["config"]["timeout_s"] == SHORT_TIMEOUT_S
    assert by_name["echo"]["default"] is True
    assert [a["name"] for a in body["data"]] == sorted(by_name)
    assert {a["kind"] for a in body["data"] if a["name"] != "echo"} == {"openai"}


async def test_the_key_never_reaches_the_logs(
    client: Client,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as captured:
        _, ok = await ask(client, "gpt", "log this")
        _, refused = await ask(client, "gpt-http401", "and this")
        _, cut = await ask(client, "gpt-cut", "and this too")
        assert (await client.get("/api/v1/agents")).status == 200
    assert (ok["status"], refused["status"], cut["status"]) == ("complete", "failed", "failed")
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in upstream.fake.requests)
    out, err = capsys.readouterr()
    logged = [repr(captured), out, err, caplog.text]
    # the request lines were captured somewhere, or the check below would prove nothing
    assert any("/messages" in text for text in logged)
    for text in logged:
        assert KEY not in text
    assert KEY not in json.dumps([ok, refused, cut])

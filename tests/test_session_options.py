"""Per-session ``model`` and ``system_prompt``, and ``GET /api/v1/agents/{name}/models``, end
to end: a real ``aiosvc serve`` whose ``openai`` agents talk to the fake upstream."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.fake_openai import FakeOpenAI
from tests.helpers import SESSION_KEYS
from tests.process_api import Api
from tests.serving import Server

KEY_ENV = "SESSION_OPTIONS_TEST_KEY"
KEY = "sk-options-secret"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
async def api(
    tmp_path: Path, fake: FakeOpenAI, aiohttp_server: AiohttpServer
) -> AsyncIterator[Api]:
    upstream = await aiohttp_server(fake.app())
    base = str(upstream.make_url("/v1"))
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        f'[agents.gpt]\nkind = "openai"\nbase_url = "{base}"\nmodel = "echo"\n'
        f'api_key_env = "{KEY_ENV}"\n\n'
        f'[agents.careful]\nkind = "openai"\nbase_url = "{base}"\nmodel = "history"\n'
        'system_prompt = "Be careful."\n\n'
        f'[agents.down]\nkind = "openai"\nbase_url = "http://127.0.0.1:{closed_port()}/v1"\n'
        'model = "echo"\n\n'
        f'[agents.lost]\nkind = "openai"\nbase_url = "{base}/nowhere"\nmodel = "echo"\n\n'
        '[agents.cmd]\nkind = "command"\nargv = ["cat"]\n'
    )
    server = Server(tmp_path / "aiosvc.db", config=config, env={KEY_ENV: KEY})
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(http, server)
    finally:
        assert await server.stop() == 0


async def reply_to(api: Api, session_id: str, content: str) -> str:
    status, body = await api.call(
        "POST", f"/api/v1/sessions/{session_id}/messages?wait=true", {"content": content}
    )
    assert status == 200, body
    assert body["data"]["status"] == "complete", body
    text: str = body["data"]["content"]
    return text


async def test_model_and_system_prompt_reach_the_upstream(api: Api, fake: FakeOpenAI) -> None:
    status, body = await api.call(
        "POST",
        "/api/v1/sessions",
        {"agent": "gpt", "model": "history", "system_prompt": "Answer in French."},
    )
    assert status == 201
    session = body["data"]
    assert set(session) == SESSION_KEYS
    assert (session["model"], session["system_prompt"]) == ("history", "Answer in French.")
    dumped = json.loads(await reply_to(api, session["id"], "bonjour"))
    assert dumped == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "bonjour"},
    ]
    assert fake.requests[-1].body["model"] == "history"
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {KEY}"
    # PATCH: another model; the title left as it was.
    status, body = await api.call("PATCH", f"/api/v1/sessions/{session['id']}", {"model": "echo"})
    assert status == 200
    assert (body["data"]["model"], body["data"]["system_prompt"]) == ("echo", "Answer in French.")
    assert await reply_to(api, session["id"], "salut") == "you said: salut"
    assert fake.requests[-1].body["model"] == "echo"
    assert fake.requests[-1].body["messages"][0] == {
        "role": "system",
        "content": "Answer in French.",
    }
    # Null goes back to the agent's own; stored: a GET reads it back.
    status, body = await api.call(
        "PATCH",
        f"/api/v1/sessions/{session['id']}",
        {"model": None, "system_prompt": None, "title": "t"},
    )
    assert status == 200
    status, body = await api.call("GET", f"/api/v1/sessions/{session['id']}")
    assert (body["data"]["title"], body["data"]["model"], body["data"]["system_prompt"]) == (
        "t",
        None,
        None,
    )
    await reply_to(api, session["id"], "plain")
    assert fake.requests[-1].body["model"] == "echo"
    assert fake.requests[-1].body["messages"][0]["role"] == "user"


async def test_the_agents_system_prompt_is_the_default(api: Api) -> None:
    status, body = await api.call("POST", "/api/v1/sessions", {"agent": "careful"})
    assert (status, body["data"]["system_prompt"]) == (201, None)
    dumped = json.loads(await reply_to(api, body["data"]["id"], "hi"))
    assert dumped[0] == {"role": "system", "content": "Be careful."}
    # An empty one of the session's own: no system message at all.
    status, body = await api.call(
        "POST", "/api/v1/sessions", {"agent": "careful", "system_prompt": ""}
    )
    assert status == 201
    dumped = json.loads(await reply_to(api, body["data"]["id"], "hi"))
    assert [m["role"] for m in dumped] == ["user"]


async def test_options_for_agents_that_cannot_use_them_are_refused(api: Api) -> None:
    for agent in ("cmd", None):  # None: the default, echo
        for field, value in (("model", "m"), ("system_prompt", "p")):
            body = {field: value} | ({"agent": agent} if agent else {})
            status, answer = await api.call("POST", "/api/v1/sessions", body)
            kind = "command" if agent else "echo"
            assert (status, answer["error"]) == (
                422,
                {
                    "code": "unsupported_option",
                    "message": f"agent {agent or 'echo'!r} ({kind}) does not take a session "
                    f"{field}",
                    "status": 422,
                    "details": {"field": field, "agent": agent or "echo", "kind": kind},
                },
            )
    session_id = await api.session()
    status, answer = await api.call("PATCH", f"/api/v1/sessions/{session_id}", {"model": "m"})
    assert (status, answer["error"]["code"]) == (422, "unsupported_option")
    _, sessions = await api.call("GET", "/api/v1/sessions")
    assert sessions["total"] == 1
    patches: list[tuple[dict[str, object], str]] = [
        ({}, "$"),
        ({"title": None}, "title"),
        ({"model": ""}, "model"),
        ({"model": 5}, "model"),
        ({"system_prompt": "x" * 65_537}, "system_prompt"),
    ]
    for patch, field in patches:
        status, answer = await api.call("PATCH", f"/api/v1/sessions/{session_id}", patch)
        assert status == 400, patch
        assert list(answer["error"]["details"]["fields"]) == [field]


async def test_models_lists_the_upstreams_models(api: Api, fake: FakeOpenAI) -> None:
    status, body = await api.call("GET", "/api/v1/agents/gpt/models")
    assert status == 200
    ids = [m["id"] for m in body["data"]]
    assert ids == sorted(ids) and {"echo", "history"} <= set(ids)
    assert body["data"][0] == {"id": ids[0], "owned_by": "fake"}
    assert (body["total"], body["limit"], body["offset"]) == (len(ids), 50, 0)
    assert fake.requests[-1].path == "/v1/models"
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {KEY}"
    status, body = await api.call("GET", "/api/v1/agents/gpt/models?limit=1&offset=1")
    assert [m["id"] for m in body["data"]] == ids[1:2]


async def test_models_errors(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/agents/nope/models")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = await api.call("GET", "/api/v1/agents/echo/models")
    assert (status, body["error"]["code"]) == (422, "unsupported_option")
    status, body = await api.call("GET", "/api/v1/agents/down/models")
    assert (status, body["error"]["code"]) == (502, "upstream_error")
    assert body["error"]["message"].startswith("http://127.0.0.1:")
    status, body = await api.call("GET", "/api/v1/agents/lost/models")
    assert (status, body["error"]["code"]) == (502, "upstream_error")
    assert body["error"]["details"]["upstream_status"] == 404
    assert KEY not in api.server.log()

"""Keys, tickets, Host and Origin checks and CORS, written as a browser or script would send
them, through a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
from aiohttp import WSServerHandshakeError

from aiosvc.app import create_app
from aiosvc.config import Config
from tests.conftest import ClientFactory
from tests.helpers import Client

KEY = "k-secret-123"
ORIGIN = "http://dashboard.example:3000"


@pytest.fixture
async def secured(aiohttp_client: ClientFactory, config: Config) -> Client:
    server = attrs.evolve(
        config.server,
        api_keys=(KEY, "second-key"),
        allowed_hosts=("aiosvc.lan",),
        allowed_origins=(ORIGIN,),
    )
    return await aiohttp_client(create_app(attrs.evolve(config, server=server)))


async def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = await response.json()
    assert set(body) == {"error"}
    return body["error"]  # type: ignore[no-any-return]


async def test_keys_in_either_header_and_401_otherwise(secured: Client) -> None:
    response = await secured.get("/api/v1/sessions")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await error_of(response) == {
        "code": "unauthorized",
        "message": "an API key is required",
        "status": 401,
    }
    response = await secured.get("/api/v1/sessions", headers={"X-API-Key": "wrong"})
    assert (await error_of(response))["message"] == "the API key is not valid"
    for headers in (
        {"X-API-Key": KEY},
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": "second-key"},
    ):
        assert (await secured.get("/api/v1/sessions", headers=headers)).status == 200
    assert (await secured.get("/health")).status == 200  # open to supervisors
    assert (await secured.get("/api/v1/health")).status == 401


async def test_query_tokens_only_on_stream_routes(secured: Client) -> None:
    response = await secured.get(f"/api/v1/sessions?token={KEY}")
    assert response.status == 401
    assert (await error_of(response))["message"] == (
        "query credentials are accepted only by the WebSocket and event-stream routes"
    )
    response = await secured.get(f"/api/v1/events?token={KEY}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    response.close()
    async with secured.ws_connect(f"/api/v1/ws?token={KEY}") as ws:
        assert (await ws.receive_json())["type"] == "hello"
    with pytest.raises(WSServerHandshakeError) as refused:
        await secured.ws_connect("/api/v1/ws?token=nope")
    assert refused.value.status == 401


async def test_tickets_are_single_use(secured: Client) -> None:
    assert (await secured.post("/api/v1/tickets")).status == 401
    response = await secured.post("/api/v1/tickets", headers={"X-API-Key": KEY})
    assert response.status == 201
    data = (await response.json())["data"]
    assert set(data) == {"ticket", "expires_at"}
    assert data["expires_at"].endswith("Z")
    async with secured.ws_connect(f"/api/v1/ws?ticket={data['ticket']}") as ws:
        assert (await ws.receive_json())["type"] == "hello"
    with pytest.raises(WSServerHandshakeError) as reused:
        await secured.ws_connect(f"/api/v1/ws?ticket={data['ticket']}")
    assert reused.value.status == 401
    fresh = (await (await secured.post("/api/v1/tickets", headers={"X-API-Key": KEY})).json())[
        "data"
    ]
    response = await secured.get(f"/api/v1/events?ticket={fresh['ticket']}")
    assert response.status == 200
    response.close()
    # A ticket is no key for other routes, and does not mint tickets.
    other = (await (await secured.post("/api/v1/tickets", headers={"X-API-Key": KEY})).json())[
        "data"
    ]
    assert (await secured.get(f"/api/v1/sessions?ticket={other['ticket']}")).status == 401
    assert (await secured.post(f"/api/v1/tickets?ticket={other['ticket']}")).status == 401


async def test_foreign_hosts_are_refused_before_anything_else(secured: Client) -> None:
    for host in ("evil.example", "evil.example:8420", "127.0.0.1.evil.example", ""):
        response = await secured.get("/api/v1/sessions", headers={"Host": host, "X-API-Key": KEY})
        assert response.status == 403, host
        assert await error_of(response) == {
            "code": "forbidden_host",
            "message": f"host {host!r} is not allowed",
            "status": 403,
        }
    # Checked even before the route is known, and before credentials.
    response = await secured.get("/nowhere", headers={"Host": "evil.example"})
    assert (await error_of(response))["code"] == "forbidden_host"
    for host in ("localhost:1", "127.0.0.1", "[::1]:8420", "AIOSVC.LAN", "aiosvc.lan:80"):
        response = await secured.get("/health", headers={"Host": host})
        assert response.status == 200, host


async def test_without_keys_every_check_still_runs_after_allowed_requests(client: Client) -> None:
    # Requests with nothing to check but a Host seen before skip the gate's calls: anything
    # else about a request must still send it through them.
    assert (await client.get("/api/v1/sessions")).status == 200
    for host in ("evil.example", "127.0.0.1.evil.example", ""):
        response = await client.get("/api/v1/sessions", headers={"Host": host})
        assert (response.status, (await error_of(response))["code"]) == (403, "forbidden_host")
    response = await client.get("/api/v1/sessions?token=abc")
    assert (response.status, (await error_of(response))["code"]) == (401, "unauthorized")
    response = await client.post("/api/v1/sessions", data=b"{}")  # no JSON content type
    assert (response.status, (await error_of(response))["code"]) == (415, "unsupported_media_type")
    evil = {"Origin": "http://evil.example"}
    response = await client.post("/api/v1/sessions", json={}, headers=evil)
    assert (response.status, (await error_of(response))["code"]) == (403, "forbidden_origin")
    assert (await client.get("/api/v1/sessions")).status == 200


async def test_cross_site_writes_and_socket_hijacking_are_refused(secured: Client) -> None:
    for origin in ("http://evil.example", "null", "http://dashboard.example:3001"):
        headers = {"Origin": origin, "X-API-Key": KEY}
        response = await secured.post("/api/v1/sessions", json={}, headers=headers)
        assert response.status == 403, origin
        assert (await error_of(response))["code"] == "forbidden_origin"
        with pytest.raises(WSServerHandshakeError) as refused:
            await secured.ws_connect(f"/api/v1/ws?token={KEY}", headers={"Origin": origin})
        assert refused.value.status == 403
    # A form post can never act: it cannot send JSON.
    response = await secured.post(
        "/api/v1/sessions",
        data="title=x",
        headers={"Content-Type": "text/plain", "X-API-Key": KEY},
    )
    assert response.status == 415
    sessions = await (await secured.get("/api/v1/sessions", headers={"X-API-Key": KEY})).json()
    assert sessions["total"] == 0


async def test_cors_for_configured_origins_only(secured: Client) -> None:
    preflight = await secured.options(
        "/api/v1/sessions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "X-API-Key" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Vary"] == "Origin"
    refused = await secured.options(
        "/api/v1/sessions",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    response = await secured.post(
        "/api/v1/sessions", json={}, headers={"Origin": ORIGIN, "X-API-Key": KEY}
    )
    assert response.status == 201
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    plain = await secured.get("/api/v1/sessions", headers={"X-API-Key": KEY})
    assert "Access-Control-Allow-Origin" not in plain.headers
    # A read from an unknown origin gets no CORS headers, so a browser hides the answer.
    sneaky = await secured.get(
        "/api/v1/sessions", headers={"Origin": "http://evil.example", "X-API-Key": KEY}
    )
    assert "Access-Control-Allow-Origin" not in sneaky.headers


async def test_the_daemons_own_origin_is_allowed(secured: Client) -> None:
    own = f"http://127.0.0.1:{secured.port}"
    response = await secured.post(
        "/api/v1/sessions",
        json={},
        headers={"Origin": own, "Host": f"127.0.0.1:{secured.port}", "X-API-Key": KEY},
    )
    assert response.status == 201


async def test_secrets_never_reach_the_log(
    secured: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await secured.get(f"/api/v1/events?token={KEY}")
    response.close()
    await secured.get("/api/v1/sessions", headers={"X-API-Key": KEY})
    ticket = (await (await secured.post("/api/v1/tickets", headers={"X-API-Key": KEY})).json())[
        "data"
    ]["ticket"]
    async with secured.ws_connect(f"/api/v1/ws?ticket={ticket}") as ws:
        await ws.receive_json()
    await asyncio.sleep(0.05)
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "/api/v1/events?token=[redacted]" in logged
    assert KEY not in logged
    assert ticket not in logged

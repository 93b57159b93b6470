"""What each holder of a setting does with a reload, through the app ``create_app`` builds:
write rate, connection caps, origins, keys, the cached first page, approvals, the OpenAPI
document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import attrs
import pytest

from aiosvc.agents import Agent, AgentRegistry, Turn
from aiosvc.agents.echo import EchoAgent
from aiosvc.app import create_app
from aiosvc.config import AgentsConfig, Config, EchoAgentConfig
from aiosvc.web.keys import COMMAND_SERVICE
from tests.conftest import ClientFactory
from tests.helpers import Client


class Loader:
    """Stands in for the file: a reload reads whatever :attr:`config` is then."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self) -> Config:
        return self.config

    def set(self, **sections: Any) -> None:
        """Change settings, ``section={field: value}``."""
        changes = {
            name: attrs.evolve(getattr(self.config, name), **fields)
            for name, fields in sections.items()
        }
        self.config = attrs.evolve(self.config, **changes)


@pytest.fixture
def loader(config: Config) -> Loader:
    """The configuration a reload will read."""
    return Loader(config)


@pytest.fixture
async def reloadable(aiohttp_client: ClientFactory, config: Config, loader: Loader) -> Client:
    """A client on an app whose reloads read ``loader``."""
    return await aiohttp_client(create_app(config, loader))


async def reload(client: Client, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """POST a reload; its data."""
    response = await client.post("/api/v1/config/reload", headers=headers)
    assert response.status == 200, await response.text()
    data: dict[str, Any] = (await response.json())["data"]
    return data


async def test_write_rate(reloadable: Client, loader: Loader) -> None:
    loader.set(limits={"write_rate_per_s": 0.01, "write_burst": 2})
    assert (await reload(reloadable))["changed"] == [
        "limits.write_burst",
        "limits.write_rate_per_s",
    ]
    statuses = [(await reloadable.post("/api/v1/sessions", json={})).status for _ in range(3)]
    assert statuses == [201, 201, 429]  # the client's bucket holds at most the new burst


async def test_origins_and_keys(reloadable: Client, loader: Loader) -> None:
    origin = {"Origin": "http://dash.example"}
    assert (await reloadable.post("/api/v1/sessions", json={}, headers=origin)).status == 403
    loader.set(server={"allowed_origins": ("http://dash.example",), "api_keys": ("k1",)})
    assert (await reload(reloadable))["changed"] == ["server.allowed_origins", "server.api_keys"]
    assert (await reloadable.get("/api/v1/sessions")).status == 401
    keyed = {**origin, "X-API-Key": "k1"}
    response = await reloadable.post("/api/v1/sessions", json={}, headers=keyed)
    assert response.status == 201
    assert response.headers["Access-Control-Allow-Origin"] == "http://dash.example"
    # a key rotated out no longer works; the new one does
    loader.set(server={"api_keys": ("k2",)})
    assert (await reload(reloadable, {"X-API-Key": "k1"}))["changed"] == ["server.api_keys"]
    assert (await reloadable.get("/api/v1/sessions", headers={"X-API-Key": "k1"})).status == 401
    assert (await reloadable.get("/api/v1/sessions", headers={"X-API-Key": "k2"})).status == 200


async def test_a_host_allowed_before_is_refused_once_removed(
    aiohttp_client: ClientFactory, config: Config
) -> None:
    server = attrs.evolve(config.server, allowed_hosts=("dash.example",))
    loader = Loader(attrs.evolve(config, server=server))
    client = await aiohttp_client(create_app(loader.config, loader))
    host = {"Host": "dash.example"}
    assert (await client.get("/api/v1/sessions", headers=host)).status == 200  # now remembered
    loader.set(server={"allowed_hosts": ()})
    assert (await reload(client))["changed"] == ["server.allowed_hosts"]
    response = await client.get("/api/v1/sessions", headers=host)
    assert (response.status, (await response.json())["error"]["code"]) == (403, "forbidden_host")


async def test_page_size_the_cached_first_page_and_the_openapi_document(
    reloadable: Client, loader: Loader
) -> None:
    for _ in range(3):
        assert (await reloadable.post("/api/v1/sessions", json={})).status == 201
    assert (await (await reloadable.get("/api/v1/sessions")).json())["limit"] == 50
    loader.set(limits={"max_page_size": 2})
    await reload(reloadable)
    page = await (await reloadable.get("/api/v1/sessions")).json()
    assert (len(page["data"]), page["total"], page["limit"]) == (2, 3, 2)
    assert (await reloadable.get("/api/v1/sessions?limit=3")).status == 400
    document = await (await reloadable.get("/api/v1/openapi.json")).json()
    (limit,) = [
        p
        for p in document["paths"]["/api/v1/sessions"]["get"]["parameters"]
        if p["name"] == "limit"
    ]
    assert limit["schema"]["maximum"] == 2


async def test_approvals_timeout_and_reply_limits_reach_the_command_service(
    reloadable: Client, loader: Loader
) -> None:
    loader.set(approvals={"timeout_s": 5.0}, limits={"max_reply_chars": 10})
    assert (await reload(reloadable))["changed"] == [
        "approvals.timeout_s",
        "limits.max_reply_chars",
    ]
    service = reloadable.app[COMMAND_SERVICE]
    assert (service.approval_timeout_s, service.limits.max_reply_chars) == (5.0, 10)
    created = await (await reloadable.post("/api/v1/sessions", json={})).json()
    url = f"/api/v1/sessions/{created['data']['id']}/messages?wait=true"
    reply = await (await reloadable.post(url, json={"content": "far more than ten"})).json()
    assert (reply["data"]["status"], reply["data"]["error"]["code"]) == (
        "failed",
        "reply_too_large",
    )


async def test_restart_only_settings_are_reported_and_kept(
    reloadable: Client, loader: Loader, config: Config
) -> None:
    loader.set(server={"port": 1, "computer": "elsewhere"}, events={"buffer_size": 3})
    assert await reload(reloadable) == {
        "changed": [],
        "restart_required": ["events.buffer_size", "server.computer", "server.port"],
    }
    shown = (await (await reloadable.get("/api/v1/config")).json())["data"]
    assert shown["config"]["server"]["port"] == config.server.port
    assert shown["restart_required"] == ["events.buffer_size", "server.computer", "server.port"]
    created = await (await reloadable.post("/api/v1/sessions", json={})).json()
    assert created["data"]["computer"] == config.server.computer


class Recording(Agent):
    """An agent that notes when it is closed."""

    kind = "recording"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.closed = 0

    async def reply(self, turn: Turn) -> AsyncGenerator[str, None]:
        """Nothing to say."""
        yield ""

    async def close(self) -> None:
        """Count it."""
        self.closed += 1


async def test_the_registry_keeps_unchanged_agents_and_closes_replaced_ones_when_idle() -> None:
    slow, fast = EchoAgentConfig(delay_ms=5), EchoAgentConfig()
    kept, busy, idle = Recording("kept"), Recording("busy"), Recording("idle")
    registry = AgentRegistry(
        {"kept": kept, "busy": busy, "idle": idle},
        "kept",
        {"kept": fast, "busy": fast, "idle": fast},
    )
    assert registry.acquire("busy") is busy  # a reply is running with it
    registry.reconfigure(AgentsConfig(default="new", backends={"kept": fast, "new": slow}))
    assert registry.get("kept") is kept
    assert (registry.get("busy"), registry.get("idle")) == (None, None)
    new = registry.get("new")
    assert isinstance(new, EchoAgent) and new.delay_ms == 5
    assert registry.default == "new"
    await asyncio.sleep(0)  # the idle one is closed in a task of its own
    assert (kept.closed, busy.closed, idle.closed) == (0, 0, 1)
    await registry.release(busy)  # its reply is done
    assert busy.closed == 1
    registry.reconfigure(AgentsConfig(default="kept", backends={"kept": slow}))
    assert registry.get("kept") is not kept  # changed: built again
    await registry.close()
    assert (kept.closed, busy.closed, idle.closed) == (1, 1, 1)

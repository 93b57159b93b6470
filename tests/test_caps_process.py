"""Limits that fit a local daemon, through a real ``aiosvc serve``: long-lived requests (event
streams, ``?wait=true``) hold places within a cap per credential and a cap in all that keeps
the last connections for ``/health`` and short requests; write budgets per key, or per
connection without keys."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSServerHandshakeError

from aiosvc.web.limits import ConnectionRates, Places, is_local, long_lived_places
from aiosvc.web.security import Tickets
from tests.rawhttp import limits_config, log_lines
from tests.serving import Server

ALL_TAKEN = {
    "code": "too_many_streams",
    "message": "too many streams and waiting requests open: try again later",
    "status": 503,
}
MINE_TAKEN = {
    "code": "too_many_streams",
    "message": "too many streams and waiting requests open with this credential: close some",
    "status": 429,
}
KEYS = ("key-one", "key-two")


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Any:
    """One request: its status, ``Retry-After`` and JSON body."""
    async with asyncio.timeout(30), http.request(method, url, **kwargs) as response:
        return response.status, response.headers.get("Retry-After"), await response.json()


async def stream(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    """An event stream, open (its answer's head received)."""
    response = await http.get(url)
    assert response.status == 200, await response.text()
    return response


def session(**headers: str) -> aiohttp.ClientSession:
    """A client opening as many connections as it has requests in progress."""
    return aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0))


async def refusals_of(server: Server) -> list[dict[str, Any]]:
    """The server's ``stream_refused`` lines."""
    lines = log_lines(await server.settled_log())
    return [line for line in lines if line["event"] == "stream_refused"]


@pytest.fixture
async def held() -> AsyncIterator[list[Any]]:
    """Streams and WebSockets a test holds open, closed at its end."""
    opened: list[Any] = []
    yield opened
    for thing in opened:
        result = thing.close()
        if asyncio.iscoroutine(result):
            await result


async def test_one_local_client_holding_every_stream_place_leaves_health_and_others_served(
    db_path: Path, tmp_path: Path, servers: list[Server], held: list[Any]
) -> None:
    # 64 connections at most; long-lived requests may hold all but the reserve, which is at
    # most half of them: 32. The per-address cap (40) does not apply to local clients.
    config = limits_config(tmp_path, max_connections=64, max_connections_per_client=40)
    server = Server(db_path, config=config)
    servers.append(server)
    await server.start()
    url = server.url
    async with session() as hog, session() as other:
        for _ in range(16):
            held.append(await stream(hog, url + "/api/v1/events"))
            held.append(await hog.ws_connect(url + "/api/v1/ws"))
        # Every place is taken: the next long-lived request, anyone's, is refused at once.
        status, retry, body = await call(hog, "GET", url + "/api/v1/events")
        assert (status, retry) == (503, "1")
        assert body == {"error": {**ALL_TAKEN, "details": {"limit": 32}}}
        with pytest.raises(WSServerHandshakeError) as refused:
            await other.ws_connect(url + "/api/v1/ws")
        assert refused.value.status == 503
        # /health and the short requests of every client are served, many at once.
        for _ in range(3):
            assert (await call(other, "GET", url + "/health"))[0] == 200
        status, _, created = await call(other, "POST", url + "/api/v1/sessions", json={})
        assert status == 201
        answers = await asyncio.gather(
            *(call(other, "GET", url + "/api/v1/sessions") for _ in range(12))
        )
        assert [a[0] for a in answers] == [200] * 12
        messages = f"{url}/api/v1/sessions/{created['data']['id']}/messages"
        # Waiting for a reply would hold a place too: refused; the same without waiting is not.
        status, _, body = await call(other, "POST", messages + "?wait=true", json={"content": "x"})
        assert (status, body["error"]["code"]) == (503, "too_many_streams")
        assert (await call(other, "POST", messages, json={"content": "x"}))[0] == 202
        # A place given back is taken again.
        held.pop(0).close()
        async with asyncio.timeout(10):
            while True:
                response = await other.get(url + "/api/v1/events")
                if response.status == 200:
                    held.append(response)
                    break
                response.close()
                await asyncio.sleep(0.05)
    refusals = await refusals_of(server)
    assert refusals[0]["level"] == "warning"
    assert (refusals[0]["reason"], refusals[0]["limit"]) == ("limit", 32)


def keyed_config(tmp_path: Path, **limits: float) -> Path:
    """Two API keys, a slow echo agent, and these ``[limits]``."""
    path = tmp_path / "aiosvc.toml"
    lines = [f"{key} = {value}" for key, value in limits.items()]
    path.write_text(
        f"[server]\napi_keys = {list(KEYS)!r}\n\n[limits]\n"
        + "\n".join(lines)
        + '\n\n[agents]\ndefault = "slow"\n\n[agents.slow]\nkind = "echo"\ndelay_ms = 300\n'
    )
    return path


async def test_a_key_holding_its_places_leaves_the_other_keys_served(
    db_path: Path, tmp_path: Path, servers: list[Server], held: list[Any]
) -> None:
    server = Server(db_path, config=keyed_config(tmp_path, max_streams_per_credential=3))
    servers.append(server)
    await server.start()
    url = server.url
    one, two = KEYS
    async with (
        session(**{"X-API-Key": one}) as first,
        session(**{"X-API-Key": two}) as second,
        aiohttp.ClientSession() as anonymous,
    ):
        _, _, created = await call(first, "POST", url + "/api/v1/sessions", json={})
        sid = created["data"]["id"]
        # The first key's three places: a header, a ?token= and a ticket it asked for.
        held.append(await stream(first, f"{url}/api/v1/sessions/{sid}/events"))
        held.append(await anonymous.ws_connect(f"{url}/api/v1/ws?token={one}"))
        _, _, ticket = await call(first, "POST", url + "/api/v1/tickets")
        ticketed = f"{url}/api/v1/events?ticket={ticket['data']['ticket']}"
        held.append(await stream(anonymous, ticketed))
        status, retry, body = await call(first, "GET", url + "/api/v1/events")
        assert (status, retry) == (429, "1")
        assert body == {"error": {**MINE_TAKEN, "details": {"limit": 3}}}
        messages = f"{url}/api/v1/sessions/{sid}/messages"
        wait = messages + "?wait=true"
        status, _, body = await call(first, "POST", wait, json={"content": "a"})
        assert (status, body["error"]["code"]) == (429, "too_many_streams")
        # Its short requests go on; the other key and /health are not touched.
        assert (await call(first, "POST", messages, json={"content": "b"}))[0] == 202
        assert (await call(first, "GET", url + "/api/v1/sessions"))[0] == 200
        assert (await call(anonymous, "GET", url + "/health"))[0] == 200
        for _ in range(3):
            held.append(await stream(second, url + "/api/v1/events"))
        assert (await call(second, "GET", url + "/api/v1/events"))[0] == 429
        # A reply waited for holds a place while it runs, and gives it back.
        held.pop(0).close()
        _, _, created = await call(first, "POST", url + "/api/v1/sessions", json={})
        messages = f"{url}/api/v1/sessions/{created['data']['id']}/messages"
        content = " ".join(["word"] * 8)
        waiting = asyncio.create_task(admitted(first, messages + "?wait=true", content))
        async with asyncio.timeout(20):  # until the reply streams
            while not any(
                m["role"] == "assistant" and m["status"] == "streaming"
                for m in (await call(first, "GET", messages))[2]["data"]
            ):
                await asyncio.sleep(0.02)
        assert (await call(first, "GET", url + "/api/v1/events"))[0] == 429
        status, reply = await waiting
        assert (status, reply["data"]["content"]) == (200, content)
        held.append(await stream(first, url + "/api/v1/events"))
    refusals = await refusals_of(server)
    assert (refusals[0]["reason"], refusals[0]["limit"]) == ("credential_limit", 3)


async def admitted(http: aiohttp.ClientSession, url: str, content: str) -> tuple[int, Any]:
    """Send a message, again while its credential has no place free (a refusal stores
    nothing): the answer once it was admitted."""
    async with asyncio.timeout(10):
        while True:
            status, _, body = await call(http, "POST", url, json={"content": content})
            if status != 429:
                return status, body
            await asyncio.sleep(0.05)


async def writes(http: aiohttp.ClientSession, url: str, count: int) -> list[int]:
    """The statuses of ``count`` session creations, one after another."""
    return [(await call(http, "POST", url + "/api/v1/sessions", json={}))[0] for _ in range(count)]


def one_connection(**headers: str) -> aiohttp.ClientSession:
    """A client on a single keep-alive connection."""
    return aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=1))


async def test_write_budgets_are_per_connection_without_keys_and_per_key_with_them(
    db_path: Path, tmp_path: Path, servers: list[Server]
) -> None:
    limits = {"write_rate_per_s": 0.1, "write_burst": 5}
    keyless = Server(db_path, config=limits_config(tmp_path, **limits))
    servers.append(keyless)
    await keyless.start()
    # A busy script runs out of its budget; the dashboard beside it still has all of its own.
    async with one_connection() as busy, one_connection() as dashboard:
        assert await writes(busy, keyless.url, 8) == [201] * 5 + [429] * 3
        assert await writes(dashboard, keyless.url, 5) == [201] * 5
        assert await writes(busy, keyless.url, 1) == [429]
    assert await keyless.stop() == 0

    (tmp_path / "keyed").mkdir()
    keyed = Server(db_path, config=keyed_config(tmp_path / "keyed", **limits))
    servers.append(keyed)
    await keyed.start()
    one, two = KEYS
    # With keys, a key's budget is its own, whichever connections it uses.
    async with one_connection(**{"X-API-Key": one}) as a, one_connection(**{"X-API-Key": one}) as b:
        assert await writes(a, keyed.url, 3) == [201] * 3
        assert await writes(b, keyed.url, 4) == [201] * 2 + [429] * 2
    async with one_connection(**{"X-API-Key": two}) as other:
        assert await writes(other, keyed.url, 5) == [201] * 5


# ---- the parts


def test_places_are_capped_per_credential_and_in_all() -> None:
    places = Places(limit=3, per_credential=2)
    assert [places.take("a"), places.take("a"), places.take("a")] == [None, None, "credential"]
    assert places.take(None) is None  # no credential: only the cap in all
    assert places.take("b") == "all"
    assert places.take(None) == "all"
    places.give_back("a")
    assert places.take("b") is None
    assert (places.total, places.by_credential) == (3, {"a": 1, "b": 1})
    for owner in ("a", "b", None):
        places.give_back(owner)
    assert (places.total, places.by_credential) == (0, {})


def test_the_reserve_is_at_most_half_of_the_connections() -> None:
    assert long_lived_places(4096, 128) == 3968
    assert long_lived_places(64, 128) == 32
    assert long_lived_places(1, 128) == 1
    assert long_lived_places(100, 0) == 100


def test_a_connection_budget_goes_with_its_connection() -> None:
    class Connection:
        pass

    rates = ConnectionRates(rate=0.001, burst=2)
    first, second = Connection(), Connection()
    assert [rates.take(first) == 0, rates.take(first) == 0, rates.take(first) > 0] == [True] * 3
    assert rates.take(second) == 0
    del first
    gc.collect()
    assert len(rates) == 1


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.0.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("local", True),
        ("192.0.2.2", False),
        ("::ffff:192.0.2.2", False),
        ("1270::1", False),
    ],
)
def test_local_addresses_are_told(address: str, local: bool) -> None:
    assert is_local(address) is local


def test_a_ticket_stands_for_the_key_that_asked_for_it() -> None:
    tickets = Tickets()
    mine, _ = tickets.issue("key-one")
    assert tickets.redeem(mine) == "key-one"
    assert tickets.redeem(mine) is None
    keyless, _ = tickets.issue(None)
    assert tickets.redeem(keyless) == "ticket"

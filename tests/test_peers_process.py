"""Peers through real ``aiosvc serve`` processes on loopback: one local daemon and two peers
(the second peered back to the local one), ``/computers`` with each peer's state, a wrong key
and an unreachable peer reported (never a crash), ``computer.online`` / ``computer.offline``
over SSE with one log line per change, and a reload that adds and removes peers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest

from tests.serving import Server, free_port, next_event

API = "/api/v1"
KEYS = {"PEER_ONE_KEY": "k-one", "PEER_TWO_KEY": "k-two", "LOCAL_KEY": "k-local"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@attrs.define
class Daemons:
    """Three daemons: ``local`` peers with ``one`` and ``two``; ``two`` peers back."""

    local: Server
    one: Server
    two: Server
    tmp: Path
    late_port: int  # a peer configured on ``local`` that is not running


def peer(name: str, url: str, env: str | None = None) -> str:
    text = f'[peers.{name}]\nurl = "{url}"\n'
    return text + (f'api_key_env = "{env}"\n' if env else "") + "\n"


def local_config(d: Daemons, *extra: str) -> str:
    return (
        '[server]\napi_keys = ["k-local"]\ncomputer = "here"\n\n'
        + peer("one", d.one.url, "PEER_ONE_KEY")
        + peer("two", d.two.url, "PEER_TWO_KEY")
        + "".join(extra)
    )


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Daemons]:
    """The three daemons, started; the local one last (its peers are up)."""
    local = Server(tmp_path / "local.db", config=tmp_path / "local.toml", env=KEYS)
    one = Server(tmp_path / "one.db", config=tmp_path / "one.toml", env=KEYS)
    two = Server(tmp_path / "two.db", config=tmp_path / "two.toml", env=KEYS)
    d = Daemons(local, one, two, tmp_path, free_port())
    assert one.config and two.config and local.config
    one.config.write_text('[server]\napi_keys = ["k-one"]\ncomputer = "one"\n')
    two.config.write_text(
        '[server]\napi_keys = ["k-two"]\ncomputer = "two"\n\n'
        + peer("back", local.url, "LOCAL_KEY")
    )
    local.config.write_text(local_config(d))
    started: list[Server] = []
    try:
        for server in (one, two, local):
            await server.start()
            started.append(server)
        yield d
    finally:
        for server in started:
            if server.process is not None and server.process.poll() is None:
                assert await server.stop() == 0, server.log()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, key: str, **kwargs: Any
) -> tuple[int, Any]:
    """One request with ``key``: its status and JSON body."""
    headers = {"X-API-Key": key, **kwargs.pop("headers", {})}
    async with http.request(method, url, headers=headers, **kwargs) as response:
        return response.status, await response.json()


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in body["data"]}


async def test_computers_lists_this_machine_and_each_peer(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    for _ in range(2):
        assert (await call(http, "POST", d.one.url + API + "/sessions", "k-one", json={}))[0] == 201
    assert (await call(http, "POST", d.two.url + API + "/sessions", "k-two", json={}))[0] == 201
    _, health = await call(http, "GET", d.one.url + "/health", "k-one")
    status, body = await call(http, "GET", d.local.url + API + "/computers", "k-local")
    assert status == 200, body
    assert [c["name"] for c in body["data"]] == ["here", "one", "two"]
    assert body["total"] == 3
    computers = by_name(body)
    for name in ("one", "two"):
        assert TIME.fullmatch(computers[name].pop("last_seen_at")), computers[name]
    assert computers["one"] == {
        "name": "one",
        "url": d.one.url,
        "local": False,
        "status": "online",
        "version": health["data"]["version"],
        "session_count": 2,
        "error": None,
    }
    assert (computers["two"]["status"], computers["two"]["session_count"]) == ("online", 1)
    assert computers["here"]["local"] is True and computers["here"]["error"] is None
    # peered both ways: two lists the local daemon, asked as a peer (no circle back)
    status, body = await call(http, "GET", d.two.url + API + "/computers", "k-two")
    assert status == 200
    assert [(c["name"], c["status"]) for c in body["data"]] == [
        ("two", "online"),
        ("back", "online"),
    ]
    # a peer's request is answered by that machine alone
    status, body = await call(
        http, "GET", d.local.url + API + "/computers", "k-local", headers={"X-Aiosvc-Peer": "x"}
    )
    assert [c["name"] for c in body["data"]] == ["here"]


async def test_a_wrong_key_and_an_unreachable_peer_are_reported_not_a_crash(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    assert d.local.config is not None
    late_url = f"http://127.0.0.1:{d.late_port}"
    d.local.config.write_text(
        local_config(
            d,
            peer("wrongkey", d.one.url, "PEER_TWO_KEY"),
            peer("nokey", d.one.url),
            peer("unset", d.one.url, "NO_SUCH_VARIABLE"),
            peer("late", late_url, "PEER_ONE_KEY"),
        )
    )
    status, reloaded = await call(http, "POST", d.local.url + API + "/config/reload", "k-local")
    assert status == 200, reloaded
    async with http.get(
        d.local.url + API + "/events?topics=computers", headers={"X-API-Key": "k-local"}
    ) as sse:
        assert sse.status == 200
        for _ in range(3):  # reads after reads: the state is told once
            status, body = await call(http, "GET", d.local.url + API + "/computers", "k-local")
            assert status == 200, body
        computers = by_name(body)
        errors = {n: (c["status"], (c["error"] or {}).get("code")) for n, c in computers.items()}
        assert errors == {
            "here": ("online", None),
            "one": ("online", None),
            "two": ("online", None),
            "wrongkey": ("offline", "peer_unauthorized"),
            "nokey": ("offline", "peer_unauthorized"),
            "unset": ("offline", "peer_key_missing"),
            "late": ("offline", "peer_unreachable"),
        }
        assert computers["late"]["last_seen_at"] is None
        assert "NO_SUCH_VARIABLE" in computers["unset"]["error"]["message"]
        told: dict[str, str] = {}
        for _ in range(6):
            event = await next_event(sse, within=10)
            data = event["data"]
            name = re.search(r'"data":\{"name":"([^"]+)"', data)
            assert name is not None, data
            assert name.group(1) not in told, "a state told twice"
            told[name.group(1)] = event["event"]
        assert told == {
            "one": "computer.online",
            "two": "computer.online",
            "wrongkey": "computer.offline",
            "nokey": "computer.offline",
            "unset": "computer.offline",
            "late": "computer.offline",
        }
        # the late peer comes up: seen on a read after the offline retry delay
        late = Server(d.tmp / "late.db", port=d.late_port, env=KEYS)
        await late.start()
        try:
            await asyncio.sleep(2.1)
            _, body = await call(http, "GET", d.local.url + API + "/computers", "k-local")
            assert by_name(body)["late"]["status"] == "offline"  # asked behind this read
            event = await next_event(sse, within=10)
            assert event["event"] == "computer.online" and '"name":"late"' in event["data"]
            _, body = await call(http, "GET", d.local.url + API + "/computers", "k-local")
            assert by_name(body)["late"]["status"] == "online"
        finally:
            assert await late.stop() == 0
    log = await d.local.settled_log()
    offline = [e for e in d.local.events() if e.get("event") == "peer_offline"]
    assert sorted(e["peer"] for e in offline) == ["late", "nokey", "unset", "wrongkey"], log
    assert "k-one" not in log and "k-two" not in log  # never the keys
    # a reload that takes peers away: listed no more
    d.local.config.write_text(local_config(d))
    assert (await call(http, "POST", d.local.url + API + "/config/reload", "k-local"))[0] == 200
    _, body = await call(http, "GET", d.local.url + API + "/computers", "k-local")
    assert [c["name"] for c in body["data"]] == ["here", "one", "two"]


async def test_a_peer_that_never_answers_holds_no_list_for_long(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with socket.socket() as hung:  # connections are accepted (by the kernel), never answered
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        config = tmp_path / "local.toml"
        config.write_text(peer("hung", f"http://127.0.0.1:{hung.getsockname()[1]}"))
        server = Server(tmp_path / "local.db", config=config)
        await server.start()
        try:
            loop = asyncio.get_running_loop()
            paths = ("/computers", "/sessions", "/approvals?status=pending", "/projects")
            took: dict[str, list[float]] = {path: [] for path in paths}
            for _ in range(3):  # the first read of each waits for the peer, once
                for path in paths:
                    started = loop.time()
                    async with http.get(server.url + API + path) as response:
                        assert response.status == 200, path
                    took[path].append(loop.time() - started)
                await asyncio.sleep(2.1)  # the offline peer is due to be asked again
            # the first read waits for the poll's timeout (5 s), never a forwarded request's
            # minute; once the peer is known offline, no read waits for it (it is asked again
            # behind them)
            assert took["/computers"][0] < 30, took
            assert all(t < 4 for times in took.values() for t in times[1:]), took
            assert all(times[0] < 4 for path, times in took.items() if path != "/computers")
        finally:
            assert await server.stop() == 0


async def new_session(http: aiohttp.ClientSession, server: Server, key: str) -> str:
    status, body = await call(http, "POST", server.url + API + "/sessions", key, json={})
    assert status == 201, body
    session_id: str = body["data"]["id"]
    return session_id


async def listed(http: aiohttp.ClientSession, server: Server, key: str, query: str = "") -> Any:
    status, body = await call(http, "GET", server.url + API + "/sessions" + query, key)
    assert status == 200, body
    return body


async def test_session_lists_merge_the_peers_and_page_across_them(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    order = [  # created one after another: newest last
        ("here", await new_session(http, d.local, "k-local")),
        ("one", await new_session(http, d.one, "k-one")),
        ("two", await new_session(http, d.two, "k-two")),
        ("one", await new_session(http, d.one, "k-one")),
        ("here", await new_session(http, d.local, "k-local")),
        ("one", await new_session(http, d.one, "k-one")),
    ]
    newest = [sid for _, sid in reversed(order)]
    body = await listed(http, d.local, "k-local")
    assert [s["id"] for s in body["data"]] == newest
    assert (body["total"], body["offset"], body["next"], body["prev"]) == (6, 0, None, None)
    where = {sid: name for name, sid in order}
    for session in body["data"]:
        assert session["computer"] == where[session["id"]]
        assert session.get("stale") == (None if where[session["id"]] == "here" else False)
    # paging across the merge: by offset, then by cursor both ways
    page = await listed(http, d.local, "k-local", "?limit=2&offset=2")
    assert [s["id"] for s in page["data"]] == newest[2:4]
    assert (page["total"], page["next"], page["prev"]) == (6, newest[3], newest[2])
    seen: list[str] = []
    query = "?limit=4"
    while True:
        page = await listed(http, d.local, "k-local", query)
        seen += [s["id"] for s in page["data"]]
        assert page["total"] == 6
        if page["next"] is None:
            break
        query = f"?limit=4&after={page['next']}"
    assert seen == newest
    page = await listed(http, d.local, "k-local", f"?limit=2&before={newest[4]}")
    assert [s["id"] for s in page["data"]] == newest[2:4]
    assert (page["offset"], page["next"], page["prev"]) == (None, newest[3], newest[2])
    status, bad = await call(
        http, "GET", d.local.url + API + "/sessions?after=ses_nosuchsession000", "k-local"
    )
    assert (status, bad["error"]["code"]) == (400, "invalid_parameter")
    # a cursor need not match the filters
    none = await listed(http, d.local, "k-local", f"?project=nothing&after={newest[1]}")
    assert (none["data"], none["total"], none["next"], none["prev"]) == ([], 0, None, None)
    # filters
    only = await listed(http, d.local, "k-local", "?computer=one")
    assert [s["id"] for s in only["data"]] == [s for s in newest if where[s] == "one"]
    assert only["total"] == 3
    mine = await listed(http, d.local, "k-local", "?computer=here")
    assert [s["id"] for s in mine["data"]] == [s for s in newest if where[s] == "here"]
    idle = await listed(http, d.local, "k-local", "?status=idle&limit=3")
    assert (idle["total"], len(idle["data"])) == (6, 3)
    assert (await listed(http, d.local, "k-local", "?status=ended"))["total"] == 0
    # peered both ways: two lists its own and the local daemon's, each once
    both = await listed(http, d.two, "k-two")
    assert sorted(s["id"] for s in both["data"]) == sorted(
        s for s in newest if where[s] in ("two", "here")
    )
    assert both["total"] == 3
    # a remote session read from the cache, its history asked of its computer
    status, one = await call(http, "GET", d.local.url + API + "/sessions/" + order[1][1], "k-local")
    assert status == 200
    assert (one["data"]["computer"], one["data"]["stale"]) == ("one", False)
    status, _ = await call(
        http,
        "POST",
        d.one.url + API + f"/sessions/{order[1][1]}/messages?wait=true",
        "k-one",
        json={"content": "hello"},
    )
    assert status in (200, 201, 202)
    status, history = await call(
        http, "GET", d.local.url + API + f"/sessions/{order[1][1]}/messages", "k-local"
    )
    assert status == 200, history
    assert [m["role"] for m in history["data"]] == ["user", "assistant"]
    status, missing = await call(
        http, "GET", d.local.url + API + "/sessions/ses_nosuchsession000/messages", "k-local"
    )
    assert (status, missing["error"]["code"]) == (404, "not_found")


async def test_a_peer_killed_and_restarted_goes_stale_then_fresh(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    ones = [await new_session(http, d.one, "k-one") for _ in range(3)]
    mine = await new_session(http, d.local, "k-local")
    body = await listed(http, d.local, "k-local")
    assert body["total"] == 4
    d.one.kill()
    assert d.one.process is not None
    d.one.process.wait(10)
    # the first request that needs the peer finds it gone
    status, gone = await call(
        http, "GET", d.local.url + API + f"/sessions/{ones[0]}/messages", "k-local"
    )
    assert (status, gone["error"]["code"]) == (503, "peer_unavailable")
    assert gone["error"]["details"] == {"computer": "one"}
    body = await listed(http, d.local, "k-local")
    assert body["total"] == 4
    stale = {s["id"]: s.get("stale") for s in body["data"]}
    assert stale == {**dict.fromkeys(ones, True), mine: None}
    _, computers = await call(http, "GET", d.local.url + API + "/computers", "k-local")
    assert by_name(computers)["one"]["status"] == "offline"
    # back on the same port and database: fresh again, nothing listed twice
    await d.one.start()

    async def fresh() -> bool:
        body = await listed(http, d.local, "k-local")
        return all(s.get("stale") is not True for s in body["data"])

    async with asyncio.timeout(20):
        while not await fresh():
            await asyncio.sleep(0.3)
    body = await listed(http, d.local, "k-local")
    assert body["total"] == 4
    assert sorted(s["id"] for s in body["data"]) == sorted([*ones, mine])


async def test_writes_to_a_remote_session_are_forwarded_to_its_computer(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    remote = await new_session(http, d.one, "k-one")
    other = await new_session(http, d.two, "k-two")
    await listed(http, d.local, "k-local")  # the local daemon learns of them
    at = d.local.url + API + f"/sessions/{remote}"
    # a message round trip, under the caller's request id
    status, reply = await call(
        http,
        "POST",
        at + "/messages?wait=true",
        "k-local",
        json={"content": "hello there"},
        headers={"X-Request-ID": "forwarded-1"},
    )
    assert status == 200, reply
    assert (reply["data"]["role"], reply["data"]["content"]) == ("assistant", "hello there")
    await d.one.settled_log()
    assert any(e.get("request_id") == "forwarded-1" for e in d.one.events())
    status, history = await call(http, "GET", at + "/messages", "k-local")
    assert [m["content"] for m in history["data"]] == ["hello there", "hello there"]
    # bad input: the peer's error, code and status kept
    status, bad = await call(http, "POST", at + "/messages", "k-local", json={"content": 7})
    assert (status, bad["error"]["code"]) == (400, "validation_error")
    # an approval for the remote session, decided on the local daemon
    status, sent = await call(
        http, "POST", at + "/messages", "k-local", json={"content": '/tool shell {"cmd": "ls"}'}
    )
    assert status == 202, sent
    pending: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while not pending:
            status, found = await call(
                http,
                "GET",
                d.local.url + API + f"/approvals?status=pending&session_id={remote}",
                "k-local",
            )
            assert status == 200, found
            pending = found["data"]
    [approval] = pending
    assert approval["session_id"] == remote
    decide = d.local.url + API + f"/approvals/{approval['id']}"
    status, resolved = await call(http, "POST", decide, "k-local", json={"decision": "approve"})
    assert (status, resolved["data"]["status"]) == (200, "approved")
    status, again = await call(http, "POST", decide, "k-local", json={"decision": "deny"})
    assert (status, again["error"]["code"]) == (409, "already_resolved")
    status, unknown = await call(
        http,
        "POST",
        d.local.url + API + "/approvals/apr_nosuchapproval0",
        "k-local",
        json={"decision": "deny"},
    )
    assert (status, unknown["error"]["code"]) == (404, "not_found")
    # cancel, rename, end, then a message to the ended session keeps the peer's 409
    status, cancelled = await call(http, "POST", at + "/cancel", "k-local")
    assert (status, cancelled["data"]["session_id"]) == (202, remote)
    status, renamed = await call(http, "PATCH", at, "k-local", json={"title": "far away"})
    assert (status, renamed["data"]["title"]) == (200, "far away")
    status, ended = await call(http, "POST", at + "/end", "k-local")
    assert (status, ended["data"]["status"]) == (200, "ended")
    status, refused = await call(http, "POST", at + "/messages", "k-local", json={"content": "x"})
    assert (status, refused["error"]["code"]) == (409, "session_ended")
    # the local list catches up behind a read
    async with asyncio.timeout(10):
        while True:
            _, one = await call(http, "GET", at, "k-local")
            if one["data"]["status"] == "ended":
                break
            await asyncio.sleep(0.1)
    assert one["data"]["title"] == "far away"
    # delete: gone from the peer and from the local list at once
    async with http.delete(at, headers={"X-API-Key": "k-local"}) as response:
        assert response.status == 204
    status, _ = await call(http, "GET", d.one.url + API + f"/sessions/{remote}", "k-one")
    assert status == 404
    status, _ = await call(http, "GET", at, "k-local")
    assert status == 404
    # the peer gone: writes are 503 peer_unavailable
    d.two.kill()
    assert d.two.process is not None
    d.two.process.wait(10)
    status, down = await call(
        http,
        "POST",
        d.local.url + API + f"/sessions/{other}/messages",
        "k-local",
        json={"content": "anyone?"},
    )
    assert (status, down["error"]["code"], down["error"]["details"]) == (
        503,
        "peer_unavailable",
        {"computer": "two"},
    )
    status, down = await call(http, "POST", d.local.url + API + f"/sessions/{other}/end", "k-local")
    assert (status, down["error"]["code"]) == (503, "peer_unavailable")


async def sse_streams(http: aiohttp.ClientSession, server: Server, key: str) -> float:
    """How many SSE streams the daemon holds open (from its metrics)."""
    async with http.get(server.url + "/metrics", headers={"X-API-Key": key}) as response:
        text = await response.text()
    found = re.search(r'^aiosvc_streams_open\{transport="sse"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def until(predicate: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)


async def events_for(
    response: aiohttp.ClientResponse, seconds: float
) -> list[tuple[str, str, dict[str, Any]]]:
    """Every event (id, type, data) the stream brings within ``seconds``."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                block = await next_event(response, within=seconds)
                found.append((block["id"], block["event"], json.loads(block["data"])))
    return found


async def test_live_relay_without_loops_and_resume_across_a_drop(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    local_events = d.local.url + API + "/events?topics=sessions"
    async with (
        http.get(local_events, headers={"X-API-Key": "k-local"}) as here,
        http.get(
            d.two.url + API + "/events?topics=sessions", headers={"X-API-Key": "k-two"}
        ) as there,
    ):
        assert (here.status, there.status) == (200, 200)

        async def relays_held() -> bool:
            return (
                await sse_streams(http, d.one, "k-one") >= 1
                and await sse_streams(http, d.two, "k-two") >= 2  # the local one's and ours
                and await sse_streams(http, d.local, "k-local") >= 2  # ours and two's relay
            )

        await until(relays_held)
        on_one = await new_session(http, d.one, "k-one")
        on_two = await new_session(http, d.two, "k-two")
        on_local = await new_session(http, d.local, "k-local")
        seen_here = await events_for(here, 3)
        seen_there = await events_for(there, 0.5)
        created_here = [(e[2]["data"]["id"], e[2]["data"]["computer"]) for e in seen_here]
        assert sorted(created_here) == sorted(
            [(on_one, "one"), (on_two, "two"), (on_local, "here")]
        ), seen_here  # each once: two's own events only, never back what it relayed
        assert [e[1] for e in seen_here] == ["session.created"] * 3
        ids = [int(e[0]) for e in seen_here]
        assert ids == sorted(ids)  # restamped with this daemon's ids
        created_there = sorted(e[2]["data"]["id"] for e in seen_there)
        assert created_there == sorted([on_two, on_local]), seen_there
        # the relayed session is in the local list at once
        body = await listed(http, d.local, "k-local", "?computer=one")
        assert on_one in [s["id"] for s in body["data"]]
        resume_from = seen_here[-1][0]
        # the peer dropped and back: the relay reconnects by itself
        d.one.kill()
        assert d.one.process is not None
        d.one.process.wait(10)
        await d.one.start()

        async def relay_back() -> bool:
            return await sse_streams(http, d.one, "k-one") >= 1

        await until(relay_back)
        after_drop = await new_session(http, d.one, "k-one")
        seen = await events_for(here, 3)
        assert [(e[1], e[2]["data"]["id"]) for e in seen] == [("session.created", after_drop)]
        relayed_id = seen[0][0]
    # a local client resumes across the drop with this daemon's ids
    async with http.get(
        local_events, headers={"X-API-Key": "k-local", "Last-Event-ID": resume_from}
    ) as again:
        replay = await events_for(again, 2)
        assert [(e[0], e[2]["data"]["id"]) for e in replay] == [(relayed_id, after_drop)]

    # nobody left: the relays close after their grace
    async def closed() -> bool:
        return await sse_streams(http, d.one, "k-one") == 0

    await until(closed)


async def relay_from_one(http: aiohttp.ClientSession, d: Daemons) -> bool:
    """Whether ``one`` serves a stream (the local daemon's relay from it)."""
    return await sse_streams(http, d.one, "k-one") >= 1


@contextlib.asynccontextmanager
async def stream_relaying_one(
    http: aiohttp.ClientSession, d: Daemons, query: str
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A local client's event stream (``query``: its topics), once the local daemon holds
    its relay from ``one``."""
    url = d.local.url + API + "/events" + query
    async with http.get(url, headers={"X-API-Key": "k-local"}) as response:
        assert response.status == 200
        await until(lambda: relay_from_one(http, d))
        yield response


async def test_a_client_of_every_event_is_relayed_the_peers_sessions(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    async with stream_relaying_one(http, d, "") as here:  # no topics: every event, "*"
        on_one = await new_session(http, d.one, "k-one")
        seen = await events_for(here, 3)
        created = [e[2]["data"] for e in seen if e[1] == "session.created"]
        assert [(s["id"], s["computer"]) for s in created] == [(on_one, "one")]


async def test_every_computers_pending_approvals_are_listed_relayed_and_answered_here(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    async with stream_relaying_one(http, d, "?topics=approvals") as here:
        on_one = await new_session(http, d.one, "k-one")
        on_local = await new_session(http, d.local, "k-local")
        for server, key, session_id in ((d.one, "k-one", on_one), (d.local, "k-local", on_local)):
            at = f"{server.url}{API}/sessions/{session_id}/messages"
            status, sent = await call(http, "POST", at, key, json={"content": "/tool ls {}"})
            assert status == 202, sent
        seen = await events_for(here, 3)
        requested = [e[2]["data"] for e in seen if e[1] == "approval.requested"]
        assert sorted(a["session_id"] for a in requested) == sorted([on_one, on_local])
        # one list of what waits, wherever it waits, newest first
        pending = d.local.url + API + "/approvals?status=pending"
        status, body = await call(http, "GET", pending, "k-local")
        assert status == 200, body
        assert [a["session_id"] for a in body["data"]] == [on_local, on_one]
        assert (body["total"], body["offset"]) == (2, 0)
        remote = body["data"][1]
        status, body = await call(http, "GET", pending + "&limit=1&offset=1", "k-local")
        assert [a["id"] for a in body["data"]] == [remote["id"]] and body["total"] == 2
        # answered here, decided there, and the decision relayed back
        at = f"{d.local.url}{API}/approvals/{remote['id']}"
        status, body = await call(http, "POST", at, "k-local", json={"decision": "approve"})
        assert (status, body["data"]["status"]) == (200, "approved"), body
        seen = await events_for(here, 3)
        resolved = [e[2]["data"] for e in seen if e[1] == "approval.resolved"]
        assert [(a["id"], a["status"]) for a in resolved] == [(remote["id"], "approved")]
    status, body = await call(http, "GET", d.one.url + API + "/approvals", "k-one")
    assert [(a["id"], a["status"]) for a in body["data"]] == [(remote["id"], "approved")]


async def test_websocket_ops_on_a_remote_session_are_forwarded_and_its_events_relayed(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    d = daemons
    remote = await new_session(http, d.one, "k-one")
    await listed(http, d.local, "k-local")
    ws = await http.ws_connect(d.local.url + API + "/ws", headers={"X-API-Key": "k-local"})
    try:
        assert (await ws.receive_json(timeout=10))["type"] == "hello"
        await ws.send_json({"op": "subscribe", "id": 1, "topics": [f"session:{remote}"]})
        assert (await ws.receive_json(timeout=10))["type"] == "ack"
        await until(lambda: relay_from_one(http, d))
        await ws.send_json(
            {"op": "send_message", "id": 2, "session_id": remote, "content": "over ws"}
        )
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(15):
            while not any(
                f["type"] == "event" and f["event"]["type"] == "message.completed" for f in frames
            ):
                frames.append(await ws.receive_json())
        [ack] = [f for f in frames if f["type"] == "ack"]
        assert (ack["id"], ack["data"]["message"]["content"]) == (2, "over ws")
        completed = [f["event"] for f in frames if f["type"] == "event"][-1]
        assert completed["topic"] == f"session:{remote}"
        assert completed["data"]["content"] == "over ws"
        # an approval of the remote session, approved over the socket for the whole session
        tool = {"op": "send_message", "id": 5, "session_id": remote, "content": "/tool ls {}"}
        await ws.send_json(tool)
        seen: list[dict[str, Any]] = []  # the events from here on

        async def until_seen(kind: str, count: int = 1) -> dict[str, Any]:
            async with asyncio.timeout(15):
                while sum(e["type"] == kind for e in seen) < count:
                    if (frame := await ws.receive_json())["type"] == "event":
                        seen.append(frame["event"])
            return [e for e in seen if e["type"] == kind][-1]

        approval_id = (await until_seen("approval.requested"))["data"]["id"]
        decision = {"approval_id": approval_id, "decision": "approve", "remember": "session"}
        await ws.send_json({"op": "approve", "id": 6, **decision})
        await until_seen("message.completed")
        await ws.send_json({**tool, "id": 7})  # remembered there: runs without asking
        done = await until_seen("message.completed", 2)
        assert done["data"]["content"] == "tool ls approved"
        assert [e["type"] for e in seen].count("approval.requested") == 1
        resolved = [e["data"] for e in seen if e["type"] == "approval.resolved"]
        assert [(a["id"], a["status"]) for a in resolved] == [(approval_id, "approved")]
        status, _ = await call(http, "POST", d.one.url + API + f"/sessions/{remote}/end", "k-one")
        assert status == 200
        await ws.send_json({"op": "send_message", "id": 3, "session_id": remote, "content": "x"})
        async with asyncio.timeout(10):
            while (frame := await ws.receive_json())["type"] != "error":
                pass
        assert (frame["id"], frame["error"]["code"]) == (3, "session_ended")
        await ws.send_json(
            {"op": "approve", "id": 4, "approval_id": "apr_nosuchapproval0", "decision": "deny"}
        )
        async with asyncio.timeout(10):
            while (frame := await ws.receive_json())["type"] != "error":
                pass
        assert (frame["id"], frame["error"]["code"]) == (4, "not_found")
    finally:
        await ws.close()

"""``GET /metrics``: the Prometheus text a real ``aiosvc serve`` answers (parsed with
prometheus-client's own parser), each named series moving when its thing happens, labels kept
bounded; and the plain counting underneath."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiosvc.app import create_app
from aiosvc.bus import Bus
from aiosvc.config import Config, StorageConfig
from aiosvc.events import EventType
from aiosvc.metrics import Histogram, Metrics
from tests.conftest import ClientFactory
from tests.helpers import Client
from tests.serving import Server

KEY = "metrics-key"
HEADERS = {"X-API-Key": KEY}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Scraper:
    """Reads a server's /metrics, with its key."""

    def __init__(self, server: Server, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http

    async def __call__(self) -> Samples:
        async with self.http.get(self.server.url + "/metrics", headers=HEADERS) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            return parse(await response.text())

    async def request(self, method: str, path: str, json: object = None) -> tuple[int, Any]:
        async with self.http.request(
            method, self.server.url + path, headers=HEADERS, json=json
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body


@pytest.fixture
async def scrape(db_path: Path, tmp_path: Path) -> AsyncIterator[Scraper]:
    config = tmp_path / "aiosvc.toml"
    config.write_text(
        f'[server]\napi_keys = ["{KEY}"]\n\n[agents.slow]\nkind = "echo"\ndelay_ms = 3000\n'
    )
    server = Server(db_path, config=config)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Scraper(server, http)
    finally:
        assert await server.stop() == 0


async def test_metrics_need_the_key_when_keys_are_set(scrape: Scraper) -> None:
    async with scrape.http.get(scrape.server.url + "/metrics") as response:
        assert response.status == 401
        body = await response.json()
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["status"] == 401


async def test_requests_are_counted_by_route_method_and_status(scrape: Scraper) -> None:
    before = await scrape()
    for _ in range(3):
        assert (await scrape.request("GET", "/api/v1/sessions"))[0] == 200
    assert (await scrape.request("GET", "/api/v1/sessions/ses_nope"))[0] == 404
    assert (await scrape.request("GET", "/nowhere/at/all"))[0] == 404
    assert (await scrape.request("PROPFIND", "/nowhere"))[0] == 404
    assert (await scrape.request("POST", "/api/v1/agents"))[0] == 405
    after = await scrape()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "aiosvc_http_requests_total"
    assert moved(requests, route="/api/v1/sessions", method="GET", status="200") == 3
    assert moved(requests, route="/api/v1/sessions/{id}", method="GET", status="404") == 1
    # requests no route matched are one route, and a method nobody knows is OTHER
    assert moved(requests, route="unmatched", method="GET", status="404") == 1
    assert moved(requests, route="unmatched", method="OTHER", status="404") == 1
    assert moved(requests, route="unmatched", method="POST", status="405") == 1
    assert not [key for key in after if ("method", "PROPFIND") in key[1]]
    assert not [key for key in after if ("route", "/nowhere/at/all") in key[1]]
    duration = "aiosvc_http_request_duration_seconds"
    assert moved(duration + "_count", route="/api/v1/sessions") == 3
    assert moved(duration + "_bucket", route="/api/v1/sessions", le="+Inf") == 3
    assert moved(duration + "_sum", route="/api/v1/sessions") > 0
    # the scrape before this one was counted too: /metrics is a route like any other
    assert value(after, requests, route="/metrics", method="GET", status="200") >= 1


async def test_streams_events_replies_approvals_and_commits(scrape: Scraper) -> None:
    before = await scrape()
    http, url = scrape.http, scrape.server.url
    ws = await http.ws_connect(url + "/api/v1/ws", headers=HEADERS)
    await ws.receive_json()
    sse = await http.get(url + "/api/v1/events", headers=HEADERS)
    await sse.content.readuntil(b"\n\n")
    opened = await scrape()
    assert value(opened, "aiosvc_streams_open", transport="ws") == 1
    assert value(opened, "aiosvc_streams_open", transport="sse") == 1
    for kind in ("deploy.done", "build", "build"):
        assert (await scrape.request("POST", "/api/v1/hooks", json={"type": kind}))[0] == 202
    _, created = await scrape.request("POST", "/api/v1/sessions", json={})
    sid = created["data"]["id"]
    status, reply = await scrape.request(
        "POST", f"/api/v1/sessions/{sid}/messages?wait=true", json={"content": "hello"}
    )
    assert (status, reply["data"]["status"]) == (200, "complete")
    _, slow = await scrape.request("POST", "/api/v1/sessions", json={"agent": "slow"})
    slow_id = slow["data"]["id"]
    await scrape.request("POST", f"/api/v1/sessions/{slow_id}/messages", json={"content": "a b"})
    assert (await scrape.request("POST", f"/api/v1/sessions/{slow_id}/cancel"))[0] == 202
    await scrape.request("POST", f"/api/v1/sessions/{sid}/messages", json={"content": "/tool x"})
    pending: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while not pending:
            _, page = await scrape.request("GET", "/api/v1/approvals?status=pending")
            pending = page["data"]
    waiting = await scrape()
    assert value(waiting, "aiosvc_approvals_pending") == 1
    approval = pending[0]["id"]
    decision = {"decision": "approve"}
    assert (await scrape.request("POST", f"/api/v1/approvals/{approval}", json=decision))[0] == 200
    await ws.close()
    sse.close()
    async with asyncio.timeout(10):
        while value(after := await scrape(), "aiosvc_streams_open", transport="sse"):
            await asyncio.sleep(0.05)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "aiosvc_approvals_pending") == 0
    assert value(after, "aiosvc_streams_open", transport="ws") == 0
    assert moved("aiosvc_stream_disconnects_total", reason="closed_by_client") == 2
    # hook types are chosen by clients: one series for all of them
    assert moved("aiosvc_events_published_total", type="hook.*") == 3
    assert not [key for key in after if ("type", "hook.build") in key[1]]
    assert moved("aiosvc_events_published_total", type="session.created") == 2
    assert moved("aiosvc_events_published_total", type="approval.requested") == 1
    assert moved("aiosvc_replies_total", agent="echo", status="complete") == 2
    assert moved("aiosvc_replies_total", agent="slow", status="cancelled") == 1
    assert moved("aiosvc_reply_duration_seconds_count", agent="echo") == 2
    assert moved("aiosvc_reply_duration_seconds_bucket", agent="slow", le="+Inf") == 1
    assert moved("aiosvc_db_commit_seconds_count") >= 6  # every write is a transaction
    assert moved("aiosvc_db_commit_seconds_sum") > 0
    assert ("aiosvc_stream_dropped_events_total", ()) in after  # moves: test_stream_endings
    # and the standard process and platform metrics
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_open_fds") > 0
    assert ("python_gc_objects_collected_total", (("generation", "0"),)) in after
    assert [key for key in after if key[0] == "python_info"]


# ---- the counting underneath


def test_a_histogram_counts_in_inclusive_buckets() -> None:
    histogram = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(seconds)
    assert histogram.buckets() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.sum == pytest.approx(8.65)


async def test_the_bus_counts_hooks_as_one_type() -> None:
    metrics = Metrics()
    bus = Bus(buffer_size=10, metrics=metrics)
    for name in ("a", "b.c"):
        bus.publish_hook(name, ["hooks"], {})
    bus.publish(EventType.STATUS, ["hooks"], {})
    bus.publish_hook("a", ["hooks"], {})
    assert metrics.events_published == {"hook.*": 3, "status": 1}


async def test_each_app_counts_for_itself(
    aiohttp_client: ClientFactory, config: Config, tmp_path: Path
) -> None:
    one: Client = await aiohttp_client(create_app(config))
    elsewhere = attrs.evolve(config, storage=StorageConfig(db=tmp_path / "other.db"))
    other: Client = await aiohttp_client(create_app(elsewhere))  # one daemon per database
    for _ in range(2):
        assert (await one.get("/api/v1/agents")).status == 200
    series = (
        "aiosvc_http_requests_total",
        (("method", "GET"), ("route", "/api/v1/agents"), ("status", "200")),
    )
    assert parse(await (await one.get("/metrics")).text())[series] == 2
    assert series not in parse(await (await other.get("/metrics")).text())


def test_the_core_counts_without_the_web_framework() -> None:
    code = (
        "import sys, aiosvc.metrics, aiosvc.bus, aiosvc.store, aiosvc.commands.service; "
        "print('aiohttp.web' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "False\n"

"""What the service counts for ``GET /metrics``.

Counting happens on hot paths (every request, every published event), so it is plain Python:
ints in dicts keyed by what will be the series' labels, histograms as bucket counts found with
``bisect``. prometheus-client builds the metric families from them only when scraped
(:class:`Collector`) and does all of the exposition. Each app has its own :class:`Metrics` and
registry (tests run many apps in one process). A leaf: the core counts into it, the web layer
serves it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from aiosvc.events import HOOK_PREFIX

HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REPLY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
#: The label of every hook event's type: their senders choose them, so each type of its own
#: would make series without bound.
HOOKS = f"{HOOK_PREFIX}*"
#: The route label of requests that no route matched.
UNMATCHED = "unmatched"
#: The methods counted by name on the catch-all route (any method reaches it); others: OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
TRANSPORTS = ("sse", "ws")


class Histogram:
    """Observations counted in buckets (not cumulative until scraped) with their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (a bucket's bound is inclusive, as Prometheus's ``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """The cumulative ``(le, count)`` pairs, ending with ``+Inf``."""
        total = 0
        found: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            found.append((cast(str, floatToGoString(bound)), total))  # type: ignore[no-untyped-call]
        return found


class RouteStats:
    """One route's requests by method and status, and their durations; made when the route
    is registered, so that a request only counts."""

    __slots__ = ("duration", "requests", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self.requests: dict[tuple[str, int], int] = {}
        self.duration = Histogram(HTTP_BUCKETS)

    def observe(self, method: str, status: int, seconds: float) -> None:
        """Count one request."""
        requests = self.requests
        key = (method, status)
        requests[key] = requests.get(key, 0) + 1
        duration = self.duration
        duration.counts[bisect_left(HTTP_BUCKETS, seconds)] += 1
        duration.sum += seconds


class UnmatchedStats(RouteStats):
    """The catch-all's requests: any method reaches it, so unknown ones count as one."""

    __slots__ = ()

    def observe(self, method: str, status: int, seconds: float) -> None:
        """Count one request, its method folded into ``OTHER`` when it is not a known one."""
        super().observe(method if method in METHODS else "OTHER", status, seconds)


class Metrics:
    """Every count the service keeps; read by :class:`Collector` when scraped."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}
        #: Published events by type (hooks as :data:`HOOKS`); the bus counts into it.
        self.events_published: dict[str, int] = {}
        self.stream_dropped_events = 0
        self.stream_disconnects: dict[str, int] = {}
        self.replies: dict[tuple[str, str], int] = {}
        self.reply_seconds: dict[str, Histogram] = {}
        self.db_commit_seconds = Histogram(COMMIT_BUCKETS)
        #: Gauges read when scraped, given by whoever knows them.
        self.streams_open: Callable[[], Mapping[str, int]] = dict
        self.approvals_pending: Callable[[], int] = lambda: 0

    def route(self, route: str | None) -> RouteStats:
        """The counts of one route (None: requests no route matched), made on first use."""
        name = UNMATCHED if route is None else route
        stats = self.routes.get(name)
        if stats is None:
            stats = self.routes[name] = UnmatchedStats(name) if route is None else RouteStats(name)
        return stats

    def reply_finished(self, agent: str, status: str, seconds: float | None) -> None:
        """Count a reply that ended; ``seconds`` is how long it ran (None: it never started)."""
        key = (agent, status)
        self.replies[key] = self.replies.get(key, 0) + 1
        if seconds is not None:
            histogram = self.reply_seconds.get(agent)
            if histogram is None:
                histogram = self.reply_seconds[agent] = Histogram(REPLY_BUCKETS)
            histogram.observe(seconds)

    def stream_ended(self, reason: str) -> None:
        """Count a stream that ended, by why."""
        self.stream_disconnects[reason] = self.stream_disconnects.get(reason, 0) + 1

    def registry(self) -> CollectorRegistry:
        """A registry of these metrics and the standard process, platform and GC ones."""
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(Collector(self))
        return registry


class Collector:
    """Builds the metric families from a :class:`Metrics` when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """Yield every family, its samples read now."""
        m = self.metrics
        requests = CounterMetricFamily(
            "aiosvc_http_requests_total",
            "HTTP requests answered, by route, method and status.",
            labels=["route", "method", "status"],
        )
        durations = HistogramMetricFamily(
            "aiosvc_http_request_duration_seconds",
            "Time from a request's arrival to its answer (a stream's: to its end), by route.",
            labels=["route"],
        )
        for route, stats in sorted(m.routes.items()):
            for (method, status), count in sorted(stats.requests.items()):
                requests.add_metric([route, method, str(status)], count)
            if stats.requests:
                durations.add_metric([route], stats.duration.buckets(), stats.duration.sum)
        yield requests
        yield durations
        streams = GaugeMetricFamily(
            "aiosvc_streams_open", "Open streams, by transport.", labels=["transport"]
        )
        open_now = m.streams_open()
        for transport in sorted({*TRANSPORTS, *open_now}):
            streams.add_metric([transport], open_now.get(transport, 0))
        yield streams
        yield _counter(
            "aiosvc_events_published_total",
            "Events published on the bus, by type (every hook type as 'hook.*').",
            ["type"],
            {(t,): n for t, n in m.events_published.items()},
        )
        yield CounterMetricFamily(
            "aiosvc_stream_dropped_events_total",
            "Low-priority events skipped for stream clients that fell behind.",
            value=m.stream_dropped_events,
        )
        yield _counter(
            "aiosvc_stream_disconnects_total",
            "Streams ended, by reason.",
            ["reason"],
            {(r,): n for r, n in m.stream_disconnects.items()},
        )
        yield _counter(
            "aiosvc_replies_total",
            "Agent replies ended, by agent and final status.",
            ["agent", "status"],
            m.replies,
        )
        replies = HistogramMetricFamily(
            "aiosvc_reply_duration_seconds",
            "How long agent replies ran, by agent.",
            labels=["agent"],
        )
        for agent, histogram in sorted(m.reply_seconds.items()):
            replies.add_metric([agent], histogram.buckets(), histogram.sum)
        yield replies
        yield GaugeMetricFamily(
            "aiosvc_approvals_pending", "Approvals waiting for a decision.", m.approvals_pending()
        )
        commits = m.db_commit_seconds
        yield HistogramMetricFamily(
            "aiosvc_db_commit_seconds",
            "Time of each database write transaction.",
            buckets=commits.buckets(),
            sum_value=commits.sum,
        )


def _counter(
    name: str, documentation: str, labels: list[str], values: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, count in sorted(values.items()):
        family.add_metric(list(key), count)
    return family

"""What the benchmark prints about its phases: one line each, the summary and the targets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import benchlib


def log_findings(path: Path) -> dict[str, int]:
    """Count the server's log lines above info, by level and event."""
    found: dict[str, int] = {}
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            key = "(not JSON) " + line[:80]
        else:
            if not isinstance(entry, dict) or entry.get("level", "info") in ("info", "debug"):
                continue
            key = f"{entry.get('level')}: {entry.get('event')}"
        found[key] = found.get(key, 0) + 1
    return found


def describe(label: str, name: str, result: dict[str, Any]) -> str:
    """One line (and notes) about a phase."""
    text = (
        f"  {label:<13} {name:<7} {result['deliveries_per_s']:>8,.0f} deliveries/s "
        f"({result['events_per_s']:4.1f} ev/s x {result['subscribers']}), latency p50/p99 "
        f"{result['p50_ms']:5.1f}/{result['p99_ms']:5.1f} ms (parsed "
        f"{result['seen_p50_ms']:.1f}/{result['seen_p99_ms']:.1f}), lost/dup/ooo "
        f"{result['lost']}/{result['duplicated']}/{result['out_of_order']}, cpu: server "
        f"{result['server_cpu']:.0%}, client core {result['client_core']:.0%}"
    )
    notes = []
    if noise(result) > DISTURBED:
        notes.append(
            f"other processes took {result['others_server_core']:.0%} of the server core and "
            f"{result['others_client_core']:.0%} of the client core: disturbed"
        )
    if result["post_failures"]:
        notes.append(f"{result['post_failures']} posts not answered 202")
    if result["deliveries"] != result["expected"]:
        notes.append(
            f"{result['deliveries']:,} of {result['expected']:,} deliveries arrived within 10 s "
            "of the last post"
        )
    if result["ended_count"]:
        notes.append(f"{result['ended_count']} streams ended: {result['ended'][:3]}")
    if result["stale"] or result["other"]:
        notes.append(f"{result['stale']} events of earlier phases, {result['other']} other frames")
    if result["unstamped"]:
        notes.append(f"{result['unstamped']} reads without a kernel timestamp")
    return text + "".join(f"\n      !! {note}" for note in notes)


def describe_stall(pair: dict[str, Any]) -> str:
    """One line (and notes) about a round's stalled subscriber: its queues before and after."""
    filled, report = pair["filled"], pair["report"]
    text = (
        f"      stalled one (SO_RCVBUF {pair['rcvbuf']} B): before its phase "
        f"{filled.get('client_receive_queue', -1):,} B in its receive queue and "
        f"{filled.get('server_send_queue', -1):,} in the server's send queue; after it, a "
        f"backlog of {report['backlog_bytes']:,} B ({report.get('server_send_queue', -1):,} "
        f"in the send queue, {report.get('client_receive_queue', -1):,} in the receive queue)"
    )
    notes = []
    if filled.get("server_send_queue", -1) <= 0:
        notes.append("its buffers had not filled before its phase: it was not stalled all along")
    if report["ended_while_stalled"]:
        notes.append(f"its stream ended while stalled: {report['ended_while_stalled']}")
    return text + "".join(f"\n      !! {note}" for note in notes)


#: A phase during which other processes took more than this share of a benchmark core.
DISTURBED = 0.15


def noise(result: dict[str, Any]) -> float:
    """The largest share of a benchmark core that other processes took during a phase."""
    return max(float(result["others_server_core"]), float(result["others_client_core"]))


def change(new: float, old: float) -> float:
    """The relative change from ``old`` to ``new``."""
    return new / old - 1 if old else float("nan")


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def summarise(
    args: argparse.Namespace,
    rate: float,
    fixed: dict[str, list[dict[str, Any]]],
    peak: dict[str, list[dict[str, Any]]],
    stall_rounds: list[dict[str, Any]],
    stall_info: dict[str, Any],
    rss: dict[str, float],
    findings: dict[str, dict[str, int]],
) -> None:
    """Print the summary block with the targets."""

    def med(results: list[dict[str, Any]], key: str) -> float:
        """The median of one figure over the rounds."""
        return benchlib.median([float(r[key]) for r in results])

    def spread(results: list[dict[str, Any]], key: str, form: str) -> str:
        """One figure of every round, formatted and joined with slashes."""
        return "/".join(format(r[key], form) for r in results)

    print(f"\n== summary: medians of {args.rounds} rounds (stall: {args.stall_rounds} rounds)")
    print(f"fixed rate, {rate:.2f} events/s to {args.ws + args.sse:,} subscribers:")
    for name, results in fixed.items():
        print(
            f"  {name:<8} {med(results, 'deliveries_per_s'):>8,.0f} deliveries/s (target "
            f"{args.deliveries:,.0f}), latency p50 {med(results, 'p50_ms'):.1f} ms, p99 "
            f"{med(results, 'p99_ms'):.1f} ms [rounds {spread(results, 'p99_ms', '.0f')}] "
            f"(parsed by the client: p50 {med(results, 'seen_p50_ms'):.1f}, p99 "
            f"{med(results, 'seen_p99_ms'):.1f}); cpu: server {med(results, 'server_cpu'):.0%}, "
            f"subscribers' process {med(results, 'receiver_cpu'):.0%}, client core "
            f"{med(results, 'client_core'):.0%}"
        )
    print(f"max rate ({args.window} posts in flight):")
    for name, results in peak.items():
        lag = med(results, "seen_p50_ms") - med(results, "p50_ms")
        print(
            f"  {name:<8} {med(results, 'deliveries_per_s'):>8,.0f} deliveries/s "
            f"[rounds {spread(results, 'deliveries_per_s', ',.0f')}] "
            f"({med(results, 'events_per_s'):.1f} events/s), cpu: server "
            f"{med(results, 'server_cpu'):.0%}, subscribers' process "
            f"{med(results, 'receiver_cpu'):.0%}, client core {med(results, 'client_core'):.0%}; "
            f"the client parsed deliveries {lag:.1f} ms (p50) after they arrived"
        )
    ratios = [
        a["deliveries_per_s"] / c["deliveries_per_s"]
        for a, c in zip(peak["aiosvc"], peak["ceiling"], strict=True)
    ]
    ratio = benchlib.median(ratios)
    print(f"  ratio aiosvc/ceiling: {ratio:.2f} [rounds {'/'.join(f'{r:.2f}' for r in ratios)}]")
    # CPU per delivery depends much less on what else runs on the server core than rates do.
    cost = {
        (name, label): benchlib.median(
            [r["server_cpu"] / r["deliveries_per_s"] * 1e6 for r in results]
        )
        for label, store in (("fixed", fixed), ("max", peak))
        for name, results in store.items()
    }
    print(
        "server CPU per delivery: fixed rate aiosvc "
        f"{cost['aiosvc', 'fixed']:.1f} us, ceiling {cost['ceiling', 'fixed']:.1f} us (ratio "
        f"{cost['ceiling', 'fixed'] / cost['aiosvc', 'fixed']:.2f}); max rate aiosvc "
        f"{cost['aiosvc', 'max']:.1f} us, ceiling {cost['ceiling', 'max']:.1f} us (ratio "
        f"{cost['ceiling', 'max'] / cost['aiosvc', 'max']:.2f})"
    )
    base_rate, base_p99 = med(fixed["aiosvc"], "deliveries_per_s"), med(fixed["aiosvc"], "p99_ms")
    rate_change, p99_change = summarise_stall(stall_rounds, stall_info, rss)
    stall_phases = [r[side] for r in stall_rounds for side in ("baseline", "stalled")]
    keys = ("lost", "duplicated", "out_of_order", "post_failures", "ended_count")
    for name in fixed:
        results = [*fixed[name], *peak[name], *(stall_phases if name == "aiosvc" else [])]
        totals = {key: sum(r[key] for r in results) for key in keys}
        print(
            f"{name}: lost {totals['lost']}, duplicated {totals['duplicated']}, out of order "
            f"{totals['out_of_order']} deliveries over every phase; {totals['post_failures']} "
            f"posts not answered 202; {totals['ended_count']} streams ended; log lines above "
            f"info: {findings[name] or 'none'}"
        )
    every = [r for rs in (*fixed.values(), *peak.values(), stall_phases) for r in rs]
    disturbed = sum(noise(r) > DISTURBED for r in every)
    if disturbed:
        print(
            f"!! {disturbed} of the {len(every)} phases counted ran while other processes took "
            f"over {DISTURBED:.0%} of a benchmark core (the machine is shared; phases are run "
            "again within --retry-seconds): compare the rounds before trusting a figure"
        )
    if args.client != "raw":
        print(
            "!! aiohttp's client gives no kernel arrival times: its latencies include the "
            "client's own processing, and how far it fell behind cannot be told"
        )
    for name, results in peak.items():
        lag = med(results, "seen_p50_ms") - med(results, "p50_ms")
        if med(results, "server_cpu") < 0.9:
            print(
                f"!! {name} used {med(results, 'server_cpu'):.0%} of its core at max rate, not "
                f"saturated: other processes took {med(results, 'others_server_core'):.0%} of "
                f"that core, and the client core was {med(results, 'client_core'):.0%} busy "
                f"({med(results, 'others_client_core'):.0%} by other processes)"
            )
        if lag > 20:
            print(f"!! at max rate the client fell {lag:.0f} ms behind {name}'s deliveries")

    aiosvc_loss = sum(
        r[k]
        for r in (*fixed["aiosvc"], *peak["aiosvc"], *stall_phases)
        for k in ("lost", "duplicated", "out_of_order")
    )
    print("\n== targets")
    print(
        f"  aiosvc/ceiling deliveries/s at saturation: {ratio:.2f} (target >= 0.60; per "
        f"server CPU second: {cost['ceiling', 'max'] / cost['aiosvc', 'max']:.2f})  "
        f"{verdict(ratio >= 0.6)}"
    )
    print(
        f"  aiosvc p99 at {args.deliveries:,.0f} deliveries/s: {base_p99:.1f} ms, "
        f"{base_rate:,.0f}/s achieved (target < 100 ms)  "
        f"{verdict(base_p99 < 100 and base_rate >= 0.98 * args.deliveries)}"
    )
    print(
        f"  stalled subscriber: deliveries/s {rate_change:+.1%}, p99 {p99_change:+.1%} "
        "(target: neither worse by more than 10 %)  "
        f"{verdict(rate_change >= -0.1 and p99_change <= 0.1)}"
    )
    print(
        f"  aiosvc lost + duplicated + out-of-order: {aiosvc_loss} (target 0)  "
        f"{verdict(aiosvc_loss == 0)}"
    )


def summarise_stall(
    rounds: list[dict[str, Any]], stall_info: dict[str, Any], rss: dict[str, float]
) -> tuple[float, float]:
    """Print the stall rounds' pairs; return the median changes of deliveries/s and p99."""

    def med(side: str, key: str) -> float:
        """The median of one figure of one side over the rounds."""
        return benchlib.median([float(r[side][key]) for r in rounds])

    # Each round's change against the phase without it in the same round: the two ran side by
    # side, so a drift in the machine's load moves both.
    changes = {
        key: [change(r["stalled"][key], r["baseline"][key]) for r in rounds]
        for key in ("deliveries_per_s", "p99_ms")
    }
    rate_change = benchlib.median(changes["deliveries_per_s"])
    p99_change = benchlib.median(changes["p99_ms"])
    print(
        f"with a stalled subscriber (SO_RCVBUF {rounds[-1]['rcvbuf']} B): "
        f"{med('stalled', 'deliveries_per_s'):,.0f} deliveries/s ({rate_change:+.1%}), p99 "
        f"{med('stalled', 'p99_ms'):.1f} ms ({p99_change:+.1%}), against "
        f"{med('baseline', 'deliveries_per_s'):,.0f}/s and {med('baseline', 'p99_ms'):.1f} ms "
        "without it (the changes: medians of each round's own, with it against without it)"
    )
    for number, (r, rate, p99) in enumerate(
        zip(rounds, changes["deliveries_per_s"], changes["p99_ms"], strict=True), 1
    ):
        base, stalled = r["baseline"], r["stalled"]
        first = "with it first" if r["stalled_first"] else "without it first"
        print(
            f"  {f'round {number} ({first}):':<28} {base['deliveries_per_s']:,.0f} -> "
            f"{stalled['deliveries_per_s']:,.0f} deliveries/s ({rate:+.1%}), p99 "
            f"{base['p99_ms']:.1f} -> {stalled['p99_ms']:.1f} ms ({p99:+.1%}); backlog "
            f"{r['report']['backlog_bytes']:,} B"
        )
    print(
        f"  events aiosvc had published: {stall_info['published_before']:,} before the stall "
        f"rounds, {stall_info['published_after']:,} after (it retains recent events for resume, "
        "so its RSS grows with them up to its buffer size, stalled subscriber or not)"
    )
    last = rounds[-1]["report"]
    backlog = last["backlog_bytes"]
    send_queue = last.get("server_send_queue", -1)
    receive_queue = last.get("client_receive_queue", -1)
    kernel = max(send_queue, 0) + max(receive_queue, 0)
    print(
        f"  aiosvc RSS {rss['before stall']:.1f} MiB before the stall rounds, "
        f"{rss['after stall']:.1f} MiB after ({rss['after stall'] - rss['before stall']:+.1f}); "
        f"the last stalled subscriber's backlog: {backlog:,} bytes, of which "
        f"{send_queue:,} in the server's socket send queue and "
        f"{receive_queue:,} in its own receive queue "
        f"(so about {max(backlog - kernel, 0):,} in aiosvc's memory); its stream: "
        f"{last['ended_while_stalled'] or 'still open'} while stalled"
    )
    return rate_change, p99_change

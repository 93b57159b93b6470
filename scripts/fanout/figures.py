"""The figures of one phase from its deliveries: latency percentiles, losses and disorder."""

from __future__ import annotations

from fanout.subscribers import Sub


def latency_figures(prefix: str, sent: list[float], received: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``received - sent``, in milliseconds."""
    if not sent:
        nan = float("nan")
        return {f"{prefix}p50_ms": nan, f"{prefix}p99_ms": nan, f"{prefix}max_ms": nan}
    ordered = sorted([r - s for s, r in zip(sent, received, strict=True)])
    last = len(ordered) - 1
    return {
        f"{prefix}p50_ms": ordered[round(0.50 * last)] * 1000,
        f"{prefix}p99_ms": ordered[round(0.99 * last)] * 1000,
        f"{prefix}max_ms": ordered[-1] * 1000,
    }


def order_figures(subs: list[Sub], published: set[int]) -> dict[str, int]:
    """Lost, duplicated and out-of-order events: totals, worst subscriber's, subscribers hit."""
    totals = dict.fromkeys(("lost", "duplicated", "out_of_order"), 0)
    worst = dict.fromkeys(totals, 0)
    affected = dict.fromkeys(totals, 0)
    for sub in subs:
        seen: set[int] = set()
        top = -1
        duplicated = out_of_order = 0
        for event_id in sub.ids:
            if event_id in seen:
                duplicated += 1
            elif event_id < top:
                out_of_order += 1
            seen.add(event_id)
            top = max(top, event_id)
        counts = {
            "lost": len(published - set(sub.seqs)),
            "duplicated": duplicated,
            "out_of_order": out_of_order,
        }
        for key, value in counts.items():
            totals[key] += value
            worst[key] = max(worst[key], value)
            affected[key] += value > 0
    return {
        **totals,
        **{f"worst_{k}": v for k, v in worst.items()},
        **{f"subs_{k}": v for k, v in affected.items()},
    }

"""Throttled log lines: the first at once, then one a spell with the count left out."""

from __future__ import annotations

import asyncio

import structlog

from aiosvc.logs.throttle import LoopErrors, Throttled


async def test_a_storm_is_one_line_then_one_with_the_count() -> None:
    with structlog.testing.capture_logs() as captured:
        throttled = Throttled("thing_happened", every_s=0.3)
        for n in range(1000):
            throttled(n=n)
        assert [(c["event"], c["n"]) for c in captured] == [("thing_happened", 0)]
        await asyncio.sleep(0.5)  # the spell ends: one line with the count
        assert [(c.get("n"), c.get("repeated")) for c in captured] == [(0, None), (999, 999)]
        await asyncio.sleep(0.5)  # nothing since: nothing more
        throttled(n=1000)  # after a quiet spell: at once
        assert [c.get("n") for c in captured] == [0, 999, 1000]
        assert captured[-1]["log_level"] == "warning"


async def test_loop_errors_are_throttled_per_kind_with_their_exception() -> None:
    loop = asyncio.get_running_loop()
    handler = LoopErrors(every_s=0.3)
    with structlog.testing.capture_logs() as captured:
        for _ in range(500):
            handler(
                loop,
                {"message": "socket.accept() out of system resource", "exception": OSError(24)},
            )
        handler(loop, {"message": "something else"})
        await asyncio.sleep(0.5)
    assert [(c["message"], c.get("repeated")) for c in captured] == [
        ("socket.accept() out of system resource", None),
        ("something else", None),
        ("socket.accept() out of system resource", 499),
    ]
    assert isinstance(captured[0]["exc_info"], OSError)
    assert "exc_info" not in captured[2]  # the traceback came with the first line
    assert {c["event"] for c in captured} == {"event_loop_error"}
    assert {c["log_level"] for c in captured} == {"error"}

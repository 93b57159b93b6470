"""The event bus: numbering, topics, the ring buffer and resume decisions."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

import mypy.api
import orjson
import pytest

from aiosvc.bus import ALL, EVENT_OVERHEAD, Bus
from aiosvc.events import EventType
from aiosvc.models import Event


def collect(bus: Bus, *topics: str) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    bus.subscribe(lambda event, topic: seen.append((event.id, topic)), topics)
    return seen


def test_ids_increase_and_data_is_serialised_once() -> None:
    bus = Bus(buffer_size=10)
    first = bus.publish_hook("a", ["hooks"], {"x": 1})
    second = bus.publish_hook("b", ["hooks"], {"x": 2})
    assert (first.id, second.id) == (1, 2)
    assert bus.last_id == 2
    assert first.data_json == b'{"x":1}'
    assert orjson.loads(first.envelope_json()) == {
        "id": 1,
        "type": "hook.a",
        "topic": "hooks",
        "ts": first.ts,
        "data": {"x": 1},
    }
    assert first.ts.endswith("Z")


def test_a_type_outside_the_enum_is_refused_and_nothing_is_published() -> None:
    bus = Bus(buffer_size=10)
    seen = collect(bus, ALL)
    for wrong in ("message.complete", "message.completed", "hook.x"):  # a str is not enough
        with pytest.raises(TypeError, match="not an event type"):
            bus.publish(wrong, ["s"], {})  # type: ignore[arg-type]
    assert (bus.last_id, seen, bus.retained) == (0, [], (0, 0))
    assert bus.publish(EventType.MESSAGE_COMPLETED, ["s"], {}).type == "message.completed"


def test_the_type_checker_refuses_a_type_outside_the_enum(tmp_path: Path) -> None:
    source = tmp_path / "publisher.py"
    source.write_text(
        "from aiosvc.bus import Bus\n"
        "from aiosvc.events import EventType\n"
        "def publish(bus: Bus) -> None:\n"
        "    bus.publish(EventType.MESSAGE_COMPLETED, ['s'], {})\n"
        "    bus.publish('message.complete', ['s'], {})\n"
        "    bus.publish(EventType.MESSAGE_COMPLETE, ['s'], {})\n"
    )
    out, _, status = mypy.api.run(["--strict", "--no-error-summary", str(source)])
    assert status == 1
    # (the lines only: mypy may report a file it has seen before under its earlier path)
    assert [line.split(": error: ")[0].rsplit(":", 1)[1] for line in out.splitlines()] == [
        "5",
        "6",
    ]


def test_delivery_by_topic_once_per_subscriber() -> None:
    bus = Bus(buffer_size=10)
    sessions = collect(bus, "sessions")
    one = collect(bus, "session:a")
    both = collect(bus, "sessions", "session:a")
    everything = collect(bus, ALL)
    bus.publish(EventType.SESSION_CREATED, ["sessions", "session:a"], {})
    bus.publish(EventType.MESSAGE_CREATED, ["session:a"], {})
    bus.publish(EventType.SESSION_CREATED, ["sessions", "session:b"], {})
    assert sessions == [(1, "sessions"), (3, "sessions")]
    assert one == [(1, "session:a"), (2, "session:a")]
    assert both == [(1, "sessions"), (2, "session:a"), (3, "sessions")]
    assert everything == [(1, "sessions"), (2, "session:a"), (3, "sessions")]


def test_unsubscribe_and_close() -> None:
    bus = Bus(buffer_size=10)
    seen: list[int] = []
    sub = bus.subscribe(lambda e, t: seen.append(e.id), ["a", "b"])
    bus.publish(EventType.TOOL_USE, ["a"], {})
    sub.remove(["a"])
    bus.publish(EventType.TOOL_USE, ["a"], {})
    bus.publish(EventType.TOOL_USE, ["b"], {})
    sub.close()
    bus.publish(EventType.TOOL_USE, ["b"], {})
    assert seen == [1, 3]
    assert bus._index == {}


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    bus = Bus(buffer_size=10)

    def broken(event: Event, topic: str) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken, ["a"])
    seen = collect(bus, "a")
    bus.publish(EventType.TOOL_USE, ["a"], {})
    assert seen == [(1, "a")]


def test_low_priority_types() -> None:
    bus = Bus(buffer_size=10)
    assert bus.publish(EventType.MESSAGE_DELTA, ["s"], {}).low_priority
    assert bus.publish(EventType.STATUS, ["s"], {}).low_priority
    assert not bus.publish(EventType.MESSAGE_COMPLETED, ["s"], {}).low_priority


def test_since_replays_after_the_id_and_resets_when_it_cannot() -> None:
    bus = Bus(buffer_size=3)
    bus.start_at(101)
    assert bus.since(100) == []  # nothing yet, nothing missed
    for n in range(5):
        bus.publish(EventType.TOOL_USE, ["t"], {"n": n})  # ids 101..105; 101 and 102 evicted
    assert [e.id for e in bus.since(103) or []] == [104, 105]
    assert [e.id for e in bus.since(102) or []] == [103, 104, 105]
    assert bus.since(105) == []
    assert bus.since(101) is None  # 102 is gone
    assert bus.since(50) is None  # from an earlier run
    assert bus.since(106) is None  # from the future


def test_the_ring_buffer_keeps_the_newest_events_within_its_byte_budget() -> None:
    each = 1000 + EVENT_OVERHEAD  # "x" * 998 is 1,000 bytes of JSON
    bus = Bus(buffer_size=1000, max_bytes=10 * each)
    ids = [bus.publish_hook("a", ["hooks"], "x" * 998).id for _ in range(30)]
    assert bus.retained == (10, 10 * each)
    assert [e.id for e in bus.since(ids[19]) or []] == ids[20:]
    assert bus.since(ids[18]) is None  # older than the window: the client resets
    small = [bus.publish_hook("b", ["hooks"], None).id for _ in range(5)]
    assert bus.retained[1] <= 10 * each
    assert [e.id for e in bus.since(small[0]) or []] == small[1:]
    # An event bigger than the whole budget is delivered but not kept.
    seen = collect(bus, "hooks")
    big = bus.publish_hook("big", ["hooks"], "y" * 20_000)
    assert seen == [(big.id, "hooks")]
    assert bus.retained == (0, 0)
    assert bus.since(big.id - 1) is None
    assert bus.since(big.id) == []
    after = bus.publish_hook("c", ["hooks"], None)
    assert [e.id for e in bus.since(big.id) or []] == [after.id]


def test_the_count_still_bounds_the_ring_buffer() -> None:
    bus = Bus(buffer_size=3, max_bytes=1 << 30)
    ids = [bus.publish_hook("a", ["hooks"], n).id for n in range(5)]
    assert bus.retained[0] == 3
    assert bus.since(ids[0]) is None
    assert [e.id for e in bus.since(ids[1]) or []] == ids[2:]


def test_a_retained_event_costs_no_more_than_the_budget_counts() -> None:
    bus = Bus(buffer_size=100_000, max_bytes=1 << 40)
    data = {"type": "tool_report", "session_id": "ses_q2Vb8tQ1xH0kZ3mN", "data": "x" * 1000}
    for n in range(10):
        bus.publish_hook("tool_report", ["hooks", f"session:ses_{n:016d}"], data)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            bus.publish_hook("tool_report", ["hooks", f"session:ses_{n:016d}"], data)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = 2000 * (len(orjson.dumps(data)) + EVENT_OVERHEAD)
    assert held <= counted, (held, counted)
    assert held > counted // 2  # and the count is not far off


async def test_reserves_the_next_id_block_before_running_out() -> None:
    reserved: list[int] = []

    async def reserve(until: int) -> None:
        reserved.append(until)

    bus = Bus(buffer_size=10, block=10)
    bus.start_at(1, 10, reserve)
    for _ in range(5):
        bus.publish(EventType.TOOL_USE, ["t"], {})
    assert reserved == []
    bus.publish(EventType.TOOL_USE, ["t"], {})  # next id 7: fewer than half a block left
    await asyncio.sleep(0)
    await bus.close()
    assert reserved == [20]


def test_internal_changes_reach_listeners_only_and_are_never_numbered() -> None:
    bus = Bus(buffer_size=10)
    everything = collect(bus, ALL)
    told: list[object] = []

    def broken(data: object) -> None:
        raise RuntimeError("a bug")

    bus.listen("thing.changed", broken)
    stop = bus.listen("thing.changed", told.append)
    bus.listen("other.changed", lambda data: told.append(("other", data)))
    bus.tell("thing.changed", 1)  # the broken listener does not stop the next one
    bus.tell("other.changed", 2)
    stop()
    bus.tell("thing.changed", 3)
    assert told == [1, ("other", 2)]
    assert (everything, bus.last_id, bus.since(0)) == ([], 0, [])

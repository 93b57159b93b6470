"""The event bus: numbering, topics, the ring buffer and resume decisions."""

from __future__ import annotations

import asyncio

import orjson

from aiosvc.bus import ALL, Bus
from aiosvc.models import Event


def collect(bus: Bus, *topics: str) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    bus.subscribe(lambda event, topic: seen.append((event.id, topic)), topics)
    return seen


def test_ids_increase_and_data_is_serialised_once() -> None:
    bus = Bus(buffer_size=10)
    first = bus.publish("hook.a", ["hooks"], {"x": 1})
    second = bus.publish("hook.b", ["hooks"], {"x": 2})
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


def test_delivery_by_topic_once_per_subscriber() -> None:
    bus = Bus(buffer_size=10)
    sessions = collect(bus, "sessions")
    one = collect(bus, "session:a")
    both = collect(bus, "sessions", "session:a")
    everything = collect(bus, ALL)
    bus.publish("session.created", ["sessions", "session:a"], {})
    bus.publish("message.created", ["session:a"], {})
    bus.publish("session.created", ["sessions", "session:b"], {})
    assert sessions == [(1, "sessions"), (3, "sessions")]
    assert one == [(1, "session:a"), (2, "session:a")]
    assert both == [(1, "sessions"), (2, "session:a"), (3, "sessions")]
    assert everything == [(1, "sessions"), (2, "session:a"), (3, "sessions")]


def test_unsubscribe_and_close() -> None:
    bus = Bus(buffer_size=10)
    seen: list[int] = []
    sub = bus.subscribe(lambda e, t: seen.append(e.id), ["a", "b"])
    bus.publish("x", ["a"], {})
    sub.remove(["a"])
    bus.publish("x", ["a"], {})
    bus.publish("x", ["b"], {})
    sub.close()
    bus.publish("x", ["b"], {})
    assert seen == [1, 3]
    assert bus._index == {}


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    bus = Bus(buffer_size=10)

    def broken(event: Event, topic: str) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken, ["a"])
    seen = collect(bus, "a")
    bus.publish("x", ["a"], {})
    assert seen == [(1, "a")]


def test_low_priority_types() -> None:
    bus = Bus(buffer_size=10)
    assert bus.publish("message.delta", ["s"], {}).low_priority
    assert bus.publish("status", ["s"], {}).low_priority
    assert not bus.publish("message.completed", ["s"], {}).low_priority


def test_since_replays_after_the_id_and_resets_when_it_cannot() -> None:
    bus = Bus(buffer_size=3)
    bus.start_at(101)
    assert bus.since(100) == []  # nothing yet, nothing missed
    for n in range(5):
        bus.publish("x", ["t"], {"n": n})  # ids 101..105; 101 and 102 evicted
    assert [e.id for e in bus.since(103) or []] == [104, 105]
    assert [e.id for e in bus.since(102) or []] == [103, 104, 105]
    assert bus.since(105) == []
    assert bus.since(101) is None  # 102 is gone
    assert bus.since(50) is None  # from an earlier run
    assert bus.since(106) is None  # from the future


async def test_reserves_the_next_id_block_before_running_out() -> None:
    reserved: list[int] = []

    async def reserve(until: int) -> None:
        reserved.append(until)

    bus = Bus(buffer_size=10, block=10)
    bus.start_at(1, 10, reserve)
    for _ in range(5):
        bus.publish("x", ["t"], {})
    assert reserved == []
    bus.publish("x", ["t"], {})  # next id 7: fewer than half a block left
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

"""The per-client outbox without a server: order, resume, priorities and bounded memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from aiosvc.bus import Bus
from aiosvc.config import StreamsConfig
from aiosvc.web.frames import WebSocketFraming
from aiosvc.web.outbox import Ending, Outbox

LIMITS = StreamsConfig(outbox_low_bytes=1_000, outbox_high_bytes=4_000, outbox_limit_bytes=20_000)


class Client:
    """Collects what the writer sends; can be stalled."""

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.open = asyncio.Event()
        self.open.set()

    async def send(self, frames: Sequence[bytes]) -> None:
        await self.open.wait()
        self.frames += [orjson.loads(f) for f in frames]

    def event_ids(self) -> list[int]:
        return [f["event"]["id"] for f in self.frames if f["type"] == "event"]  # type: ignore[index]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.fixture
async def bus() -> Bus:
    return Bus(buffer_size=100)


async def run(outbox: Outbox, client: Client) -> asyncio.Task[Ending]:
    return asyncio.get_running_loop().create_task(outbox.run(client.send))


async def test_live_events_in_order_for_subscribed_topics_only(bus: Bus) -> None:
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    outbox.subscribe(["session:a"])
    writer = await run(outbox, client)
    bus.publish("message.created", ["session:a"], {"n": 1})
    bus.publish("message.created", ["session:b"], {"n": 2})
    bus.publish("session.updated", ["sessions", "session:a"], {"n": 3})
    await settle()
    outbox.end(Ending.CLOSED)
    assert await writer is Ending.CLOSED
    assert client.frames == [
        {
            "type": "event",
            "event": {
                "id": 1,
                "type": "message.created",
                "topic": "session:a",
                "ts": client.frames[0]["event"]["ts"],  # type: ignore[index]
                "data": {"n": 1},
            },
        },
        {
            "type": "event",
            "event": {
                "id": 3,
                "type": "session.updated",
                "topic": "session:a",
                "ts": client.frames[1]["event"]["ts"],  # type: ignore[index]
                "data": {"n": 3},
            },
        },
    ]


async def test_resume_replays_after_the_id_then_live_without_gap_or_duplicate(bus: Bus) -> None:
    for n in range(5):
        bus.publish("hook.x", ["hooks"], {"n": n})  # ids 1..5
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    assert outbox.subscribe(["hooks"], since=2, preface=b'{"type":"ack"}')
    bus.publish("hook.x", ["hooks"], {"n": 5})  # id 6, live
    writer = await run(outbox, client)
    await settle()
    bus.publish("hook.x", ["hooks"], {"n": 6})  # id 7
    await settle()
    outbox.end(Ending.CLOSED)
    await writer
    assert client.frames[0] == {"type": "ack"}
    assert client.event_ids() == [3, 4, 5, 6, 7]


async def test_resubscribing_with_since_does_not_repeat_what_was_sent_live(bus: Bus) -> None:
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    outbox.subscribe(["session:a"])
    bus.publish("x", ["session:a"], {})  # 1, live
    bus.publish("x", ["sessions"], {})  # 2, not subscribed yet
    bus.publish("x", ["sessions", "session:a"], {})  # 3, live through session:a
    outbox.subscribe(["session:a", "sessions"], since=0)
    writer = await run(outbox, client)
    await settle()
    outbox.end(Ending.CLOSED)
    await writer
    assert client.event_ids() == [1, 3, 2]  # live first (queued earlier), then the missed one


async def test_an_id_that_cannot_be_replayed_gets_one_reset(bus: Bus) -> None:
    small = Bus(buffer_size=2)
    for _ in range(5):
        small.publish("x", ["hooks"], {})
    outbox, client = Outbox(small, WebSocketFraming(), LIMITS), Client()
    assert not outbox.subscribe(["hooks"], since=1)
    writer = await run(outbox, client)
    small.publish("x", ["hooks"], {})
    await settle()
    outbox.end(Ending.CLOSED)
    await writer
    assert client.frames[0] == {"type": "reset", "last_event_id": 5}
    assert client.event_ids() == [6]


async def test_low_priority_events_are_skipped_for_a_slow_client_and_counted(bus: Bus) -> None:
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    outbox.subscribe(["s"])
    client.open.clear()  # the client stops reading
    writer = await run(outbox, client)
    big = "x" * 500
    for _ in range(30):
        bus.publish("message.delta", ["s"], {"delta": big})
    assert outbox.dropping
    skipped = outbox.dropped
    assert skipped > 0
    assert outbox.pending <= LIMITS.outbox_high_bytes
    bus.publish("message.completed", ["s"], {"final": True})  # high priority: kept
    client.open.set()
    await settle()
    outbox.end(Ending.CLOSED)
    await writer
    kinds = [f["type"] for f in client.frames]
    assert kinds.count("dropped") == 1
    notice = next(f for f in client.frames if f["type"] == "dropped")
    assert notice == {"type": "dropped", "count": skipped}
    types = [f["event"]["type"] for f in client.frames if f["type"] == "event"]  # type: ignore[index]
    assert types[-1] == "message.completed"
    assert len(types) == 31 - skipped


async def test_a_client_too_slow_for_high_priority_events_is_dropped_and_memory_freed(
    bus: Bus,
) -> None:
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    overflowed: list[bool] = []
    outbox.on_overflow = lambda: overflowed.append(True)
    outbox.subscribe(["s"])
    client.open.clear()
    writer = await run(outbox, client)
    for n in range(1_000):
        bus.publish("message.completed", ["s"], {"n": n, "pad": "y" * 200})
        assert outbox.pending <= LIMITS.outbox_limit_bytes
    assert outbox.ending is Ending.OVERFLOW
    assert overflowed == [True]
    assert outbox.pending == 0
    assert bus._index == {}  # it no longer takes events
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer


async def test_shutdown_sends_what_is_queued_then_ends(bus: Bus) -> None:
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    outbox.subscribe(["s"])
    bus.publish("x", ["s"], {})
    outbox.end(Ending.SHUTDOWN)
    bus.publish("x", ["s"], {})  # after the end: not sent
    assert await outbox.run(client.send) is Ending.SHUTDOWN
    assert client.event_ids() == [1]

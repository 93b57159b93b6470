"""The per-client outbox without a server: order, resume, priorities and bounded memory."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence

import orjson
import pytest

from aiosvc.bus import Bus, Deliver
from aiosvc.config import StreamsConfig
from aiosvc.events import EventType
from aiosvc.web.frames import FANOUT, Framing, SSEFraming, WebSocketFraming
from aiosvc.web.outbox import Ending, Flusher, Outbox

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


def test_a_fan_out_builds_each_frame_once_and_its_frames_go_with_the_event() -> None:
    bus, ws, sse = Bus(buffer_size=10), WebSocketFraming(), SSEFraming()
    built: dict[str, list[bytes]] = {"ws": [], "sse": []}

    def client(framing: Framing) -> Deliver:
        return lambda event, topic: built[framing.name].append(framing.event(event, topic))

    for framing in (ws, ws, sse, sse):
        bus.subscribe(client(framing), ["s"])
    event = bus.publish(EventType.TOOL_USE, ["s"], {"n": 1})
    [one, two], [three, four] = built["ws"], built["sse"]
    assert one is two and three is four
    assert FANOUT.kept(event) == {("ws", "s"): one, ("sse", "s"): three}
    following = bus.publish(EventType.TOOL_USE, ["s"], {"n": 2})  # starts afresh
    assert FANOUT.kept(event) == {} and len(FANOUT) == 2
    assert ws.event(event, "s") == one  # (built again: the one in hand is the next)
    gone = weakref.ref(following)
    del event, following
    assert gone() is None and len(FANOUT) == 0  # nothing outlives the events


async def test_live_events_in_order_for_subscribed_topics_only(bus: Bus) -> None:
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    outbox.subscribe(["session:a"])
    writer = await run(outbox, client)
    bus.publish(EventType.MESSAGE_CREATED, ["session:a"], {"n": 1})
    bus.publish(EventType.MESSAGE_CREATED, ["session:b"], {"n": 2})
    bus.publish(EventType.SESSION_UPDATED, ["sessions", "session:a"], {"n": 3})
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
        bus.publish_hook("x", ["hooks"], {"n": n})  # ids 1..5
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    assert outbox.subscribe(["hooks"], since=2, preface=b'{"type":"ack"}')
    bus.publish_hook("x", ["hooks"], {"n": 5})  # id 6, live
    writer = await run(outbox, client)
    await settle()
    bus.publish_hook("x", ["hooks"], {"n": 6})  # id 7
    await settle()
    outbox.end(Ending.CLOSED)
    await writer
    assert client.frames[0] == {"type": "ack"}
    assert client.event_ids() == [3, 4, 5, 6, 7]


async def test_resubscribing_with_since_does_not_repeat_what_was_sent_live(bus: Bus) -> None:
    outbox, client = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    outbox.subscribe(["session:a"])
    bus.publish(EventType.TOOL_USE, ["session:a"], {})  # 1, live
    bus.publish(EventType.TOOL_USE, ["sessions"], {})  # 2, not subscribed yet
    bus.publish(EventType.TOOL_USE, ["sessions", "session:a"], {})  # 3, live through session:a
    outbox.subscribe(["session:a", "sessions"], since=0)
    writer = await run(outbox, client)
    await settle()
    outbox.end(Ending.CLOSED)
    await writer
    assert client.event_ids() == [1, 3, 2]  # live first (queued earlier), then the missed one


async def test_an_id_that_cannot_be_replayed_gets_one_reset(bus: Bus) -> None:
    small = Bus(buffer_size=2)
    for _ in range(5):
        small.publish(EventType.TOOL_USE, ["hooks"], {})
    outbox, client = Outbox(small, WebSocketFraming(), LIMITS), Client()
    assert not outbox.subscribe(["hooks"], since=1)
    writer = await run(outbox, client)
    small.publish(EventType.TOOL_USE, ["hooks"], {})
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
        bus.publish(EventType.MESSAGE_DELTA, ["s"], {"delta": big})
    assert outbox.dropping
    skipped = outbox.dropped
    assert skipped > 0
    assert outbox.pending <= LIMITS.outbox_high_bytes
    bus.publish(EventType.MESSAGE_COMPLETED, ["s"], {"final": True})  # high priority: kept
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
        bus.publish(EventType.MESSAGE_COMPLETED, ["s"], {"n": n, "pad": "y" * 200})
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
    bus.publish(EventType.TOOL_USE, ["s"], {})
    outbox.end(Ending.SHUTDOWN)
    bus.publish(EventType.TOOL_USE, ["s"], {})  # after the end: not sent
    assert await outbox.run(client.send) is Ending.SHUTDOWN
    assert client.event_ids() == [1]


class Direct:
    """A connection that takes frames synchronously while it has ``room``; keeps each write."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.room = True
        self.broken = False
        self.writes: list[list[int]] = []  # the event ids of each direct write

    def writable(self) -> bool:
        return self.room

    def write_now(self, frames: Sequence[bytes]) -> None:
        if self.broken:
            raise ConnectionResetError("the peer went away")
        decoded = [orjson.loads(f) for f in frames]
        self.client.frames += decoded
        self.writes.append([f["event"]["id"] for f in decoded if f["type"] == "event"])


class CountingClient(Client):
    """A client that also counts the writer task's sends (the slow path)."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[list[int]] = []

    async def send(self, frames: Sequence[bytes]) -> None:
        await self.open.wait()
        decoded = [orjson.loads(f) for f in frames]
        self.frames += decoded
        self.sends.append([f["event"]["id"] for f in decoded if f["type"] == "event"])


async def direct_outbox(bus: Bus) -> tuple[Outbox, CountingClient, Direct, asyncio.Task[Ending]]:
    outbox = Outbox(bus, WebSocketFraming(), LIMITS, Flusher())
    client = CountingClient()
    direct = Direct(client)
    outbox.subscribe(["s"])
    writer = asyncio.get_running_loop().create_task(outbox.run(client.send, direct))
    await settle()  # the writer is idle
    return outbox, client, direct, writer


async def test_frames_of_one_loop_turn_leave_in_one_direct_write_at_its_end(bus: Bus) -> None:
    outbox, client, direct, writer = await direct_outbox(bus)
    for n in range(3):
        bus.publish(EventType.TOOL_USE, ["s"], {"n": n})
    assert client.frames == []  # not before the turn is over
    await asyncio.sleep(0)
    assert direct.writes == [[1, 2, 3]]
    bus.publish(EventType.TOOL_USE, ["s"], {})
    await asyncio.sleep(0)
    assert direct.writes == [[1, 2, 3], [4]]
    assert client.sends == []  # the writer task was never woken for them
    assert outbox.pending == 0
    outbox.end(Ending.CLOSED)
    assert await writer is Ending.CLOSED


async def test_a_client_that_falls_behind_gets_the_writer_and_keeps_its_order(bus: Bus) -> None:
    outbox, client, direct, writer = await direct_outbox(bus)
    bus.publish(EventType.TOOL_USE, ["s"], {})  # 1: direct
    await asyncio.sleep(0)
    direct.room = False  # its socket fills up
    client.open.clear()  # and the writer's send waits for it
    bus.publish(EventType.TOOL_USE, ["s"], {})  # 2: handed to the writer, which blocks on it
    await settle()
    direct.room = True  # room again: but the writer is busy, so it keeps the queue
    bus.publish(EventType.TOOL_USE, ["s"], {})  # 3
    bus.publish(EventType.TOOL_USE, ["s"], {})  # 4
    await settle()
    assert direct.writes == [[1]]
    client.open.set()
    await settle()
    assert client.sends == [[2], [3, 4]]
    bus.publish(EventType.TOOL_USE, ["s"], {})  # 5: the writer is idle again, so direct
    await settle()
    assert direct.writes == [[1], [5]]
    assert client.event_ids() == [1, 2, 3, 4, 5]
    outbox.end(Ending.CLOSED)
    assert await writer is Ending.CLOSED


async def test_a_direct_write_to_a_closed_connection_ends_the_outbox(bus: Bus) -> None:
    _, _, direct, writer = await direct_outbox(bus)
    direct.broken = True
    bus.publish(EventType.TOOL_USE, ["s"], {})
    assert await asyncio.wait_for(writer, 5) is Ending.CLOSED
    assert bus._index == {}  # it no longer takes events


async def test_an_outbox_that_ends_within_the_turn_is_left_to_its_writer(bus: Bus) -> None:
    outbox, client, direct, writer = await direct_outbox(bus)
    bus.publish(EventType.TOOL_USE, ["s"], {})
    outbox.end(Ending.SHUTDOWN)  # before the flusher's turn: the writer sends it all
    assert await writer is Ending.SHUTDOWN
    assert direct.writes == []
    assert client.sends == [[1]]


# Large frames ----------------------------------------------------------------------------------
# (LIMITS: low mark 1,000, high mark 4,000, limit 20,000; data over 10,000 bytes goes cut to
# values of at most 1,250 bytes.)


def delta(n: int) -> dict[str, object]:
    return {"message_id": "m", "delta": f"{n:03d}" * 30}  # about 180 bytes of frame


async def test_a_big_frame_does_not_cost_a_client_that_keeps_up_the_deltas_of_its_turn(
    bus: Bus,
) -> None:
    outbox, client, direct, writer = await direct_outbox(bus)
    bus.publish_hook("big", ["s"], {"pad": "b" * 4_500})  # over the high mark on its own
    for n in range(10):
        bus.publish(EventType.MESSAGE_DELTA, ["s"], delta(n))
    bus.publish(EventType.MESSAGE_DELTA, ["s"], {"message_id": "m", "delta": "d" * 2_500})
    assert outbox.dropped_total == 0
    await asyncio.sleep(0)
    assert direct.writes == [list(range(1, 13))]  # every one, in one write at the turn's end
    assert [f["type"] for f in client.frames] == ["event"] * 12
    outbox.end(Ending.CLOSED)
    assert await writer is Ending.CLOSED


async def test_a_client_behind_still_skips_deltas_past_the_high_mark(bus: Bus) -> None:
    outbox, client, direct, writer = await direct_outbox(bus)
    direct.room = False  # its connection holds the low mark unsent: behind
    bus.publish_hook("big", ["s"], {"pad": "b" * 6_000})
    for n in range(10):
        bus.publish(EventType.MESSAGE_DELTA, ["s"], delta(n))
    assert outbox.dropping
    assert outbox.dropped == 10
    bus.publish(EventType.MESSAGE_COMPLETED, ["s"], {"content": "all of it"})  # high priority: kept
    direct.room = True
    await settle()
    assert client.frames[-1] == {"type": "dropped", "count": 10}
    assert client.event_ids() == [1, 12]
    outbox.end(Ending.CLOSED)
    await writer


async def test_a_client_that_keeps_up_takes_deltas_up_to_half_the_limit_in_a_turn(
    bus: Bus,
) -> None:
    outbox, client, _direct, writer = await direct_outbox(bus)
    for n in range(60):  # about 11,000 bytes: past 10,000 the rest are skipped, told at once
        bus.publish(EventType.MESSAGE_DELTA, ["s"], delta(n))
    taken = outbox.sent + len([1 for _ in outbox._queue])
    assert 0 < outbox.dropped_total < 60
    assert outbox.dropped == 0  # already told
    bus.publish(EventType.MESSAGE_COMPLETED, ["s"], {"content": "x"})
    await asyncio.sleep(0)
    notices = [f for f in client.frames if f["type"] == "dropped"]
    assert notices == [{"type": "dropped", "count": 1}] * outbox.dropped_total
    assert len(client.event_ids()) == taken - len(notices) + 1
    assert client.event_ids()[-1] == 61
    outbox.end(Ending.CLOSED)
    await writer


async def test_a_delta_too_big_for_a_client_that_keeps_up_is_skipped_alone_and_told(
    bus: Bus,
) -> None:
    outbox, client, _direct, writer = await direct_outbox(bus)
    bus.publish(EventType.MESSAGE_DELTA, ["s"], {"message_id": "m", "delta": "h" * 12_000})
    bus.publish(EventType.MESSAGE_DELTA, ["s"], delta(1))  # the next one is not skipped with it
    await asyncio.sleep(0)
    assert client.frames[0] == {"type": "dropped", "count": 1}
    assert client.event_ids() == [2]
    assert not outbox.dropping
    outbox.end(Ending.CLOSED)
    await writer


def completed(content: str) -> dict[str, object]:
    return {"id": "msg_1", "session_id": "ses_1", "role": "assistant", "content": content}


async def test_an_event_over_half_the_limit_goes_cut_live_and_in_a_replay(bus: Bus) -> None:
    outbox, client, _direct, writer = await direct_outbox(bus)
    text = "word " * 20_000  # 100 KB: five times the limit
    bus.publish(EventType.MESSAGE_COMPLETED, ["s"], completed(text))
    bus.publish_hook("big", ["s"], {"type": "big", "session_id": None, "data": {"p": text}})
    bus.publish(EventType.MESSAGE_DELTA, ["s"], {"message_id": "m", "delta": text})
    await asyncio.sleep(0)
    assert outbox.ending is None  # not disconnected
    live = client.frames
    assert [f["type"] for f in live] == ["event", "event", "dropped"]
    message: dict[str, object] = live[0]["event"]["data"]  # type: ignore[index]
    assert set(message) == {"id", "session_id", "role", "content", "truncated"}
    assert message["truncated"] is True
    content = message["content"]
    assert isinstance(content, str) and text.startswith(content)
    assert 1_000 < len(content) <= 1_248  # cut to 1,250 bytes of JSON
    hook = live[1]["event"]["data"]  # type: ignore[index]
    assert hook == {"type": "big", "session_id": None, "data": None, "truncated": True}
    outbox.end(Ending.CLOSED)
    await writer
    # a client resuming from before them gets the same frames, and the skip told
    again, replayed = Outbox(bus, WebSocketFraming(), LIMITS), Client()
    again.subscribe(["s"], since=0)
    task = await run(again, replayed)
    await settle()
    again.end(Ending.CLOSED)
    await task
    assert replayed.frames == live
    assert again.dropped_total == 1


async def test_a_replay_of_skipped_events_only_writes_nothing_empty(bus: Bus) -> None:
    bus.publish(EventType.MESSAGE_DELTA, ["s"], {"message_id": "m", "delta": "z" * 12_000})
    outbox, client, _direct, writer = await direct_outbox(bus)
    outbox.subscribe(["s"], since=0)
    await settle()
    assert client.frames == [{"type": "dropped", "count": 1}]
    assert len(client.sends) == 1  # one send, of the notice: never one of nothing
    outbox.end(Ending.CLOSED)
    await writer

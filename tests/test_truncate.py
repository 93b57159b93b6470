"""Events too large for an outbox: their data cut to a bounded size, marked truncated."""

from __future__ import annotations

import orjson
import pytest

from aiosvc.bus import Bus
from aiosvc.events import EventType
from aiosvc.web.frames import FANOUT, SSEFraming, WebSocketFraming
from aiosvc.web.truncate import cut_data, cut_frame, cut_text

ROOM = 1_000


@pytest.mark.parametrize(
    "text",
    [
        "plain words " * 500,
        "é" * 3_000,  # two bytes a character
        "\x01" * 3_000,  # six bytes a character, escaped
        "\U0001f600" * 3_000,  # four bytes a character
        'a\nb"c\\' * 1_000,  # two bytes for each of three of them
    ],
)
def test_text_keeps_the_longest_beginning_that_fits(text: str) -> None:
    kept = cut_text(text, ROOM)
    assert text.startswith(kept)
    size = len(orjson.dumps(kept))
    assert size <= ROOM
    assert len(orjson.dumps(text[: len(kept) + 1])) > ROOM or len(kept) == len(text)
    assert size > ROOM - 12  # nothing much left unused


def test_a_message_keeps_its_fields_and_the_beginning_of_its_content() -> None:
    message = {
        "id": "msg_1",
        "session_id": "ses_1",
        "role": "assistant",
        "content": "x" * 50_000,
        "status": "complete",
        "created_at": "2026-12-01T14:50:00.871Z",
        "completed_at": "2026-12-01T14:50:00.871Z",
        "error": None,
    }
    data = orjson.loads(cut_data(orjson.dumps(message), ROOM))
    assert list(data) == [*message, "truncated"]
    assert data == {**message, "content": "x" * (ROOM - 2), "truncated": True}


def test_large_objects_become_null_and_small_values_stay() -> None:
    hook = {"type": "ci", "session_id": None, "data": {"log": "y" * 5_000}, "n": [1, 2]}
    data = orjson.loads(cut_data(orjson.dumps(hook), ROOM))
    assert data == {"type": "ci", "session_id": None, "data": None, "n": [1, 2], "truncated": True}


def test_data_that_is_not_an_object_is_only_marked() -> None:
    assert orjson.loads(cut_data(orjson.dumps(["z" * 5_000]), ROOM)) == {"truncated": True}


def test_a_cut_frame_is_built_once_per_transport_and_topic_for_a_fan_out() -> None:
    bus = Bus(buffer_size=10)
    event = bus.publish(EventType.MESSAGE_COMPLETED, ["session:a"], {"content": "w" * 5_000})
    ws, sse = WebSocketFraming(), SSEFraming()
    frame = cut_frame(ws, event, "session:a", ROOM)
    assert cut_frame(ws, event, "session:a", ROOM) is frame
    assert orjson.loads(frame)["event"] == {
        "id": event.id,
        "type": "message.completed",
        "topic": "session:a",
        "ts": event.ts,
        "data": {"content": "w" * (ROOM - 2), "truncated": True},
    }
    block = cut_frame(sse, event, "session:a", ROOM)
    head, data = block.split(b"data: ")
    assert head == b"id: %d\nevent: message.completed\n" % event.id
    assert orjson.loads(data)["data"] == {"content": "w" * (ROOM - 2), "truncated": True}
    assert event.data_json == orjson.dumps({"content": "w" * 5_000})  # the event stays whole
    # a replay (of the ring buffer's copy) builds it for one client only: nothing kept, and
    # the frames of the event in hand stay
    [replayed] = bus.since(0) or []
    assert cut_frame(ws, replayed, "session:a", ROOM, keep=False) == frame
    assert FANOUT.kept(replayed) == {}
    assert FANOUT.kept(event)[(f"ws:cut:{ROOM}", "session:a")] is frame

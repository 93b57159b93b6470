"""Events too large for a client's outbox, sent with their data cut and ``"truncated": true``.

A reply may hold megabytes of text: sent whole, its ``message.completed`` would not fit a
client's outbox, and a client that keeps up would be disconnected for it. Such an event goes
out with the same id, type and topic, its data cut to a bounded size and marked, so that a
client that ignores the mark still shows a sane state (the beginning of the text), and one
that reads it fetches the whole over REST (``GET /api/v1/sessions/{id}/messages``):

- each top-level text value over the room (``content`` of a message) keeps its beginning;
- each top-level object or array over the room (a hook's ``data``) becomes ``null``;
- ``"truncated": true`` is added.

The cut data and frames are built once per event for a fan-out, as the whole ones are.
"""

from __future__ import annotations

import attrs
import orjson

from aiosvc.models import Event
from aiosvc.web.frames import FANOUT, Framing


def cut_data(data_json: bytes, room: int) -> bytes:
    """``data_json`` with every top-level value over ``room`` bytes cut, marked truncated."""
    data = orjson.loads(data_json)
    if not isinstance(data, dict):  # every event's data is an object; anything else goes
        return b'{"truncated":true}'
    for key, value in data.items():
        if isinstance(value, str):
            if len(value) > room // 6:  # (a character is at most 6 bytes of JSON)
                data[key] = cut_text(value, room)
        elif isinstance(value, dict | list) and len(orjson.dumps(value)) > room:
            data[key] = None
    data["truncated"] = True
    return orjson.dumps(data)


def cut_text(text: str, room: int) -> str:
    """The longest beginning of ``text`` that is at most ``room`` bytes as a JSON string."""
    end = min(len(text), room)  # a character is at least one byte
    size = len(orjson.dumps(text[:end]))
    while size > room and end:
        # shrink by the share that is over (most text is near one byte a character)
        end = min(end - 1, end * room // size)
        size = len(orjson.dumps(text[:end]))
    return text[:end]


def cut_frame(framing: Framing, event: Event, topic: str, room: int, keep: bool = True) -> bytes:
    """The frame of ``event`` on ``topic`` with its data cut to values of ``room`` bytes;
    ``keep`` it for the other clients of a fan-out (as :meth:`Framing.event`)."""
    kept = FANOUT.of(event) if keep else {}
    key = (f"{framing.name}:cut:{room}", topic)
    frame = kept.get(key)
    if frame is None:
        data_key = ("cut", str(room))  # the same cut data serves both transports
        data_json = kept.get(data_key)
        if data_json is None:
            data_json = kept[data_key] = cut_data(event.data_json, room)
        cut = attrs.evolve(event, data_json=data_json)
        frame = kept[key] = framing.event(cut, topic, keep=False)
    return frame

"""Ops waiting to go out on the WebSocket, and ops sent but not yet answered.

An op is sent at most once: one that went out on a connection which then broke before its
answer came is not sent again (the server may well have acted on it), it is reported instead.
An op typed while disconnected simply waits here for the next connection.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any

import attrs


@attrs.define
class Op:
    """One client-to-server frame, with the client id its answer will carry."""

    id: str
    frame: dict[str, Any]
    matched: bool = False  # a send_message whose message.created was already seen

    @property
    def kind(self) -> str:
        """The op's name (``send_message``, ``cancel``, ``approve``)."""
        return str(self.frame["op"])

    @property
    def content(self) -> str | None:
        """A send_message's text."""
        value = self.frame.get("content")
        return value if isinstance(value, str) else None

    def encode(self) -> str:
        """The JSON text frame."""
        return json.dumps({**self.frame, "id": self.id}, ensure_ascii=False)


class PendingOps:
    """Unsent ops in order, and sent ones by id until their ack or error arrives."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.unsent: deque[Op] = deque()
        self.in_flight: dict[str, Op] = {}

    def __bool__(self) -> bool:
        return bool(self.unsent or self.in_flight)

    def add(self, op: str, **fields: Any) -> Op:
        """Queue an op; return it."""
        queued = Op(id=f"c{next(self._ids)}", frame={"op": op, **fields})
        self.unsent.append(queued)
        return queued

    def next(self) -> Op | None:
        """The op to send next, left in the queue until :meth:`sent` says it went out."""
        return self.unsent[0] if self.unsent else None

    def sent(self, op: Op) -> None:
        """Record that ``op`` was written to the connection."""
        if self.unsent and self.unsent[0] is op:
            self.unsent.popleft()
        self.in_flight[op.id] = op

    def answered(self, op_id: object) -> Op | None:
        """Forget the op an ack or error answers; return it (None if it is not ours)."""
        if not isinstance(op_id, str):
            return None
        return self.in_flight.pop(op_id, None)

    def match_message(self, content: str) -> bool:
        """Tell whether a new user message with ``content`` is one this client sent."""
        for op in self.in_flight.values():
            if op.kind == "send_message" and not op.matched and op.content == content:
                op.matched = True
                return True
        return False

    def disconnected(self) -> list[Op]:
        """The connection broke: give up on answers to what was sent; return those ops."""
        lost = list(self.in_flight.values())
        self.in_flight.clear()
        return lost

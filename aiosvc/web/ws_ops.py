"""The WebSocket ops, each registered once with the type of its body (``@websocket_op``).

The WebSocket's dispatcher reads a frame's ``op`` and ``id``, validates the rest into the op's
body (a wrong field is an error frame, and the op never runs), then calls the op; what the op
returns is the data of its ``ack``. The OpenAPI document lists the ops from the same table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import attrs
from aiohttp import web

from aiosvc.bus import is_valid_topic
from aiosvc.commands.types import CancelReplies, ResolveApproval, SendMessage
from aiosvc.errors import InvalidParameter, ValidationFailed
from aiosvc.rules import MAX_TOPICS, TOPICS
from aiosvc.web import remote
from aiosvc.web.bodies import (
    ApproveOp,
    CancelOp,
    PingOp,
    SendMessageOp,
    SubscribeOp,
    UnsubscribeOp,
)
from aiosvc.web.frames import WebSocketFraming
from aiosvc.web.keys import CACHE, COMMAND_SERVICE, PEERS
from aiosvc.web.outbox import Outbox

B = TypeVar("B")


class OpStream(Protocol):
    """What an op may use of the WebSocket it came on."""

    @property
    def app(self) -> web.Application:
        """The application (its services)."""
        ...

    @property
    def outbox(self) -> Outbox:
        """The stream's subscription and queue of frames."""
        ...

    def session_id(self, given: str | None) -> str:
        """The session an op names, or the one the socket is bound to."""
        ...


OpHandler = Callable[[OpStream, B, object], Awaitable[Any]]
"""Runs an op: the stream, the validated body, the client's id; returns the ack's data."""


@attrs.frozen
class Op:
    """One WebSocket op: its name, the type its frames are validated into, its handler."""

    name: str
    body: type[Any]
    handler: OpHandler[Any]


#: Every op, by name.
OPS: dict[str, Op] = {}
#: What an op returns when it queued its own ack (subscribe: the ack precedes the replay).
ACKED = object()


def websocket_op(name: str, body: type[B]) -> Callable[[OpHandler[B]], OpHandler[B]]:
    """Register the decorated handler as the op ``name``, its frames validated into ``body``."""

    def register(handler: OpHandler[B]) -> OpHandler[B]:
        if name in OPS:
            raise ValueError(f"the op {name!r} is registered twice")
        OPS[name] = Op(name, body, handler)
        return handler

    return register


def bodies() -> Mapping[str, type[Any]]:
    """Each op's body type, by name (for the OpenAPI document)."""
    return {name: op.body for name, op in OPS.items()}


@websocket_op("subscribe", SubscribeOp)
async def subscribe(stream: OpStream, op: SubscribeOp, client_id: object) -> Any:
    """Add topics, replaying from ``since``: acknowledged before any replayed event."""
    check_topics(op.topics)
    if op.since is not None and op.since < 0:
        raise InvalidParameter("since", "must be an event id (an integer >= 0)")
    topics = sorted(stream.outbox.topics | set(op.topics))
    ack = WebSocketFraming.message("ack", id=client_id, data={"topics": topics, "since": op.since})
    stream.outbox.subscribe(op.topics, op.since, preface=ack)
    return ACKED


@websocket_op("unsubscribe", UnsubscribeOp)
async def unsubscribe(stream: OpStream, op: UnsubscribeOp, client_id: object) -> Any:
    """Drop topics; acknowledged with the topics left."""
    check_topics(op.topics)
    stream.outbox.unsubscribe(op.topics)
    return {"topics": sorted(stream.outbox.topics)}


@websocket_op("send_message", SendMessageOp)
async def send_message(stream: OpStream, op: SendMessageOp, client_id: object) -> Any:
    """Send a message, as ``POST .../messages`` does (another computer's session: forwarded)."""
    session_id = stream.session_id(op.session_id)
    found = remote.remote_in(stream.app, session_id)
    if found is not None:
        path = f"/api/v1/sessions/{session_id}/messages"
        answer = await remote.forwarded_op(found[0], path, {"content": op.content})
        found[0].written(session_id, deleted=False)
        return answer
    command = SendMessage(session_id=session_id, content=op.content)
    accepted = await stream.app[COMMAND_SERVICE].execute(command)
    return {
        "message": accepted.message,
        "reply_id": accepted.reply_id,
        "command_id": accepted.command_id,
    }


@websocket_op("cancel", CancelOp)
async def cancel(stream: OpStream, op: CancelOp, client_id: object) -> Any:
    """Stop the session's running reply and drop its queued ones (another computer's
    session: forwarded)."""
    session_id = stream.session_id(op.session_id)
    found = remote.remote_in(stream.app, session_id)
    if found is not None:
        return await remote.forwarded_op(found[0], f"/api/v1/sessions/{session_id}/cancel")
    result = await stream.app[COMMAND_SERVICE].execute(CancelReplies(session_id=session_id))
    return {"session_id": result.session_id, "cancelled": list(result.cancelled)}


@websocket_op("approve", ApproveOp)
async def approve(stream: OpStream, op: ApproveOp, client_id: object) -> Any:
    """Approve or deny a pending approval (one this machine does not know: offered to the
    peers)."""
    if stream.app[CACHE].approval(op.approval_id) is None and stream.app[PEERS].links:
        answer = await remote.forwarded_approval_op(
            stream.app, op.approval_id, op.decision, op.remember
        )
        if answer is not None:
            return answer
    return await stream.app[COMMAND_SERVICE].execute(
        ResolveApproval(approval_id=op.approval_id, decision=op.decision, remember=op.remember)
    )


@websocket_op("ping", PingOp)
async def ping(stream: OpStream, op: PingOp, client_id: object) -> Any:
    """Answer an empty ack."""
    return {}


def check_topics(topics: list[str]) -> None:
    """Refuse too many topics, or one that does not exist."""
    if len(topics) > MAX_TOPICS:
        raise ValidationFailed({"topics": f"at most {MAX_TOPICS} topics at a time"})
    bad = [t for t in topics if not is_valid_topic(t)]
    if bad:
        raise ValidationFailed(
            {"topics": f"unknown topic(s): {', '.join(map(repr, bad[:5]))}"},
            message=f"expected {TOPICS}",
        )

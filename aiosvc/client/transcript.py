"""What the client knows of the conversation, and how each event is shown.

Events can reach the client twice over (a history fetched over REST and the live stream
overlap around a connect or a ``reset``), so everything shown is remembered by message id and
shown once. A reply whose beginning the client missed is muted and shown whole when it ends.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiosvc.client.display import Display
from aiosvc.client.pending import Op, PendingOps
from aiosvc.events import FINAL_TYPES, EventType

UNFINISHED = frozenset({"pending", "streaming"})


def describe_op(op: Op) -> str:
    """How a person typed ``op``, for notices about it."""
    if op.kind == "send_message":
        text = op.content or ""
        return json.dumps(text if len(text) <= 40 else text[:39] + "…", ensure_ascii=False)
    if op.kind == "approve":
        word = "/approve" if op.frame.get("decision") == "approve" else "/deny"
        return f"{word} {op.frame.get('approval_id')}"
    return f"/{op.kind}"


class Transcript:
    """The session as this client has shown it: messages, running replies, pending approvals."""

    def __init__(
        self,
        display: Display,
        outbox: PendingOps,
        *,
        status: str | None = None,
        agent: str = "agent",
    ) -> None:
        self.display = display
        self.outbox = outbox
        self.status = status
        self.agent = agent  # the label of the agent's lines
        self.shown: set[str] = set()  # messages shown in full (or typed here): never again
        # reply text shown so far, by message id, in the pieces it came in (joined once, at
        # the end: adding to one string per delta would copy it all each time)
        self.streamed: dict[str, list[str]] = {}
        self.muted: set[str] = set()  # replies whose start was missed: shown whole at the end
        self.running: set[str] = set()  # replies started and not finished
        self.awaited: set[str] = set()  # replies to this client's messages, not finished
        self.approvals: dict[str, dict[str, Any]] = {}  # pending, oldest first
        self.deleted = False
        self.changed = asyncio.Event()  # set after every change to what :attr:`busy` says

    @property
    def busy(self) -> bool:
        """Tell whether something this client waits for is still under way."""
        return bool(self.outbox or self.awaited or self.running)

    @property
    def blocked(self) -> bool:
        """Tell whether what is under way waits on an approval nobody here has answered."""
        return bool(self.approvals) and not self.outbox

    async def settled(self) -> None:
        """Wait until nothing is under way (ops answered, replies finished), or until what is
        under way waits for an approval (:attr:`blocked`): it would wait for ever."""
        while self.busy and not self.blocked:
            self.changed.clear()
            await self.changed.wait()

    @property
    def latest_approval(self) -> str | None:
        """The id of the newest pending approval."""
        return next(reversed(self.approvals), None)

    # History (REST) ----------------------------------------------------------------------------

    def show_history(self, messages: list[dict[str, Any]], approvals: list[dict[str, Any]]) -> None:
        """Show the messages and approvals not shown yet; reconcile which replies run."""
        listed_running: set[str] = set()
        for message in messages:
            message_id = str(message["id"])
            if message_id in self.shown:
                continue
            if message.get("role") == "user":
                self.shown.add(message_id)
                if not self.outbox.match_message(str(message.get("content", ""))):
                    self.display.user(str(message.get("content", "")))
            elif message.get("status") in UNFINISHED:
                # Deltas before this point were missed: show it whole when it ends.
                listed_running.add(message_id)
                self.muted.add(message_id)
            else:
                self._final(message)
        # Replies the history shows finished were ended above; any other reply the client
        # thought running is outside the page or was lost with a restart: trust the history.
        self.running = listed_running | (self.running & self.awaited)
        for approval in approvals:
            self._approval_requested(approval)
        self.changed.set()

    # Events (WebSocket) ------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        """Show one event of the session's topic."""
        kind = event.get("type")
        data = event.get("data")
        if not isinstance(data, dict):
            return
        if kind == EventType.MESSAGE_CREATED:
            self._created(data)
        elif kind == EventType.MESSAGE_STARTED:
            if data.get("id") not in self.shown:
                self.running.add(str(data.get("id")))
        elif kind == EventType.MESSAGE_DELTA:
            self._delta(str(data.get("message_id")), str(data.get("delta", "")))
        elif kind in FINAL_TYPES:
            if data.get("id") not in self.shown:
                self._final(data)
        elif kind == EventType.APPROVAL_REQUESTED:
            self._approval_requested(data)
        elif kind == EventType.APPROVAL_RESOLVED:
            self.approvals.pop(str(data.get("id")), None)
            self.display.notice(f"approval {data.get('id')} {data.get('status')}")
        elif kind in (EventType.STATUS, EventType.SESSION_UPDATED, EventType.SESSION_ENDED):
            # session.updated repeats the status: it is high priority, status events may drop
            self._status(data.get("status"))
        elif kind == EventType.SESSION_DELETED:
            self.display.notice("session deleted")
            self.deleted = True
        self.changed.set()

    def _created(self, message: dict[str, Any]) -> None:
        message_id = str(message.get("id"))
        if message_id in self.shown:
            return
        self.shown.add(message_id)
        content = str(message.get("content", ""))
        if message.get("role") != "user":
            self._final(message)
        elif not self.outbox.match_message(content):  # typed elsewhere
            self.display.user(content)

    def _delta(self, message_id: str, delta: str) -> None:
        if message_id in self.shown or message_id in self.muted:
            return
        self.running.add(message_id)
        self.streamed.setdefault(message_id, []).append(delta)
        self.display.stream(message_id, delta, self.agent)

    def _final(self, message: dict[str, Any]) -> None:
        """Show how a message ended: the rest of its text, then a failure or cancellation."""
        message_id = str(message.get("id"))
        self.shown.add(message_id)
        self.running.discard(message_id)
        self.awaited.discard(message_id)
        self.muted.discard(message_id)
        streamed = "".join(self.streamed.pop(message_id, ()))
        content = str(message.get("content") or "")
        role = message.get("role")
        label = str(role) if role in ("tool", "system") else self.agent
        if streamed and content.startswith(streamed):
            content = content[len(streamed) :]  # the deltas showed the beginning
        elif streamed and self.display.open == message_id:
            self.display.end_line()  # the deltas shown do not add up to it: show it all
        if content:
            self.display.stream(message_id, content, label)
        self.display.end_line()
        status = message.get("status")
        if status == "failed":
            error = message.get("error") or {}
            self.display.notice(f"failed: {error.get('code')}: {error.get('message')}")
        elif status == "cancelled":
            self.display.notice("cancelled")

    def _approval_requested(self, approval: dict[str, Any]) -> None:
        approval_id = str(approval.get("id"))
        if approval_id in self.approvals or approval.get("status", "pending") != "pending":
            return
        self.approvals[approval_id] = approval
        tool_input = json.dumps(approval.get("input"), ensure_ascii=False)
        # (the tool's name and input come from the agent: line() escapes them, newlines too)
        self.display.line(
            f"[approval {approval_id}] tool {approval.get('tool')} input {tool_input}: "
            "answer with /approve or /deny"
        )

    def _status(self, status: object) -> None:
        if isinstance(status, str) and status != self.status:
            self.status = status
            self.display.notice(f"status {status}")

    # Answers to ops ----------------------------------------------------------------------------

    def acked(self, op: Op, data: Any) -> None:
        """An op succeeded."""
        if op.kind == "approve":
            # decided: what waits on it is no longer blocked, whichever of this ack and
            # approval.resolved comes first
            self.approvals.pop(str(op.frame.get("approval_id")), None)
        elif op.kind == "send_message" and isinstance(data, dict):
            message = data.get("message")
            if isinstance(message, dict):
                self.shown.add(str(message.get("id")))
            reply_id = str(data.get("reply_id"))
            if reply_id not in self.shown:  # (its end may have come before the ack)
                self.awaited.add(reply_id)
        elif op.kind == "cancel" and isinstance(data, dict) and not data.get("cancelled"):
            self.display.notice("nothing to cancel")
        self.changed.set()

    def failed(self, op: Op | None, error: Any) -> None:
        """An op (or a frame the server could not read) was refused."""
        error = error if isinstance(error, dict) else {}
        about = f" ({describe_op(op)})" if op is not None else ""
        self.display.notice(f"error {error.get('code')}: {error.get('message')}{about}")
        self.changed.set()

    def lost(self, ops: list[Op]) -> None:
        """The connection broke before these ops were answered; they are not sent again."""
        for op in ops:
            self.display.notice(
                f"no answer to {describe_op(op)} before the connection broke; not sent again"
            )
        self.changed.set()

"""The API's resources as frozen attrs models, plus ids and the event record.

Models are immutable: a change is a new value made with :func:`attrs.evolve`, so a snapshot
handed to a reader never changes under it.
"""

from __future__ import annotations

import re
import secrets
from enum import StrEnum
from typing import Any

import orjson
from attrs import field, frozen

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_id(prefix: str) -> str:
    """Return a fresh opaque, URL-safe id such as ``ses_q2Vb8tQ1xH0kZ3mN``."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


def is_valid_id(value: str) -> bool:
    """Tell whether ``value`` has the shape of an id (URL-safe, 1 to 64 characters)."""
    return ID_PATTERN.fullmatch(value) is not None


class SessionStatus(StrEnum):
    """Where a session is in its life."""

    IDLE = "idle"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    ENDED = "ended"


class Role(StrEnum):
    """Who wrote a message."""

    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    SYSTEM = "system"


class MessageStatus(StrEnum):
    """Where a message is in its life; the last three are final."""

    PENDING = "pending"
    STREAMING = "streaming"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    FAILED = "failed"


class CommandStatus(StrEnum):
    """Where a command is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ApprovalStatus(StrEnum):
    """Where a tool-use approval is in its life."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


@frozen(kw_only=True)
class ErrorInfo:
    """Why a message or command failed."""

    code: str
    message: str


@frozen(kw_only=True)
class Session:
    """A conversation with one agent."""

    id: str
    title: str
    agent: str
    project: str | None
    computer: str
    status: SessionStatus
    created_at: str
    updated_at: str
    message_count: int = 0
    last_message_at: str | None = None
    #: The model and system prompt this session's replies use (None: the agent's own).
    model: str | None = None
    system_prompt: str | None = None


@frozen(kw_only=True)
class Message:
    """One message in a session's history."""

    id: str
    session_id: str
    role: Role
    content: str
    status: MessageStatus
    created_at: str
    completed_at: str | None = None
    error: ErrorInfo | None = None


@frozen(kw_only=True)
class Command:
    """A unit of work submitted to the command service, as clients see it."""

    id: str
    type: str
    status: CommandStatus
    session_id: str | None
    created_at: str
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None


@frozen(kw_only=True)
class Approval:
    """An agent's request to run a tool, waiting for a person's decision.

    An external approval (asked by a program outside the daemon) may have no session, and has
    no message.
    """

    id: str
    session_id: str | None
    message_id: str | None
    tool: str
    input: Any
    status: ApprovalStatus
    created_at: str
    resolved_at: str | None = None


@frozen(kw_only=True)
class Event:
    """One published event; its data is serialised to JSON once, at publication."""

    id: int
    type: str  # an EventType, or "hook." and the type its sender posted
    topics: tuple[str, ...]
    ts: str
    data_json: bytes = field(repr=False)
    low_priority: bool = False
    # The data as the publisher handed it (a model, usually), for consumers in this process
    # such as the cache, so they need not decode the JSON again.
    obj: Any = field(default=None, eq=False, repr=False)
    # Received from a peer and published here again (see aiosvc.peers.relay): never sent to
    # a peer (no loops), never applied to this machine's cache.
    relayed: bool = False

    @property
    def topic(self) -> str:
        """The event's primary (first) topic."""
        return self.topics[0]

    def data(self) -> Any:
        """Decode the event's data (for consumers inside the process, such as tests)."""
        return orjson.loads(self.data_json)

    def envelope_json(self, topic: str | None = None) -> bytes:
        """Return ``{"id","type","topic","ts","data"}`` as JSON bytes, for the given topic."""
        return b'{"id":%d,"type":%s,"topic":%s,"ts":"%s","data":%s}' % (
            self.id,
            orjson.dumps(self.type),
            orjson.dumps(topic or self.topic),
            self.ts.encode(),
            self.data_json,
        )

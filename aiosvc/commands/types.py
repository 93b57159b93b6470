"""Every write the API accepts, as a command object handed to the command service."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import attrs
from attrs import frozen

from aiosvc.models import Message


@frozen(kw_only=True)
class CreateSession:
    """Start a new session."""

    title: str | None = None
    agent: str | None = None
    project: str | None = None
    model: str | None = None
    system_prompt: str | None = None


@frozen(kw_only=True)
class UpdateSession:
    """Change a session's title, model or system prompt: only the fields named in ``given``
    (a model or system prompt set to None goes back to the agent's own); without ``given``,
    those that are not None."""

    session_id: str
    title: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    given: frozenset[str] | None = None


@frozen(kw_only=True)
class EndSession:
    """End a session: no more messages; running and queued replies are cancelled."""

    session_id: str


@frozen(kw_only=True)
class DeleteSession:
    """Delete a session and its history."""

    session_id: str


@frozen(kw_only=True)
class SendMessage:
    """Store a user message and queue the agent's reply behind the session's earlier ones."""

    session_id: str
    content: str


@frozen(kw_only=True)
class CancelReplies:
    """Stop the session's running reply and drop its queued ones."""

    session_id: str


@frozen(kw_only=True)
class ResolveApproval:
    """Approve or deny a pending tool call."""

    approval_id: str
    decision: Literal["approve", "deny"]
    #: "session": later calls of the same tool in that session are approved without asking.
    remember: Literal["session"] | None = None


@frozen(kw_only=True)
class RequestApproval:
    """Ask a person about a tool call made by a program outside the daemon."""

    tool: str
    input: Any
    session_id: str | None = None
    timeout_s: float | None = None  # None: the configured approval timeout


@frozen(kw_only=True)
class PublishHook:
    """Publish an external event as ``hook.<type>``."""

    type: str
    session_id: str | None = None
    data: Any = None


AnyCommand = (
    CreateSession
    | UpdateSession
    | EndSession
    | DeleteSession
    | SendMessage
    | CancelReplies
    | ResolveApproval
    | RequestApproval
    | PublishHook
)


@frozen(kw_only=True)
class Accepted:
    """What sending a message answers: the stored user message and where its reply will be."""

    message: Message
    reply_id: str
    command_id: str
    reply: asyncio.Future[Message] = attrs.field(repr=False, eq=False)


@frozen(kw_only=True)
class Cancelled:
    """What cancelling answers: the replies that were stopped or will never start."""

    session_id: str
    cancelled: tuple[str, ...]

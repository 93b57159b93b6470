"""The bodies the API reads: each route's JSON body and each WebSocket op's frame, as frozen
attrs classes that the strict converter (:mod:`aiosvc.convert`) builds and the OpenAPI document
describes."""

from __future__ import annotations

from typing import Any, Literal

from attrs import frozen

# Request bodies ------------------------------------------------------------------------------


@frozen(kw_only=True)
class SessionCreate:
    """Body of ``POST /api/v1/sessions``."""

    title: str | None = None
    agent: str | None = None
    project: str | None = None
    model: str | None = None
    system_prompt: str | None = None


@frozen(kw_only=True)
class SessionPatch:
    """Body of ``PATCH /api/v1/sessions/{id}``: the fields to change (at least one; a null
    ``model`` or ``system_prompt`` goes back to the agent's own)."""

    title: str | None = None
    model: str | None = None
    system_prompt: str | None = None


@frozen(kw_only=True)
class MessageCreate:
    """Body of ``POST /api/v1/sessions/{id}/messages``."""

    content: str


@frozen(kw_only=True)
class ApprovalDecision:
    """Body of ``POST /api/v1/approvals/{id}``."""

    decision: Literal["approve", "deny"]
    remember: Literal["session"] | None = None


@frozen(kw_only=True)
class ApprovalCreate:
    """Body of ``POST /api/v1/approvals``: an external program's tool call."""

    tool: str
    input: Any
    session_id: str | None = None
    timeout_s: float | None = None


@frozen(kw_only=True)
class HookCreate:
    """Body of ``POST /api/v1/hooks``."""

    type: str
    session_id: str | None = None
    data: Any = None


@frozen(kw_only=True)
class LoginCreate:
    """Body of ``POST /api/v1/login``."""

    key: str


# WebSocket ops (the frame's "op" and "id" are read before these) -------------------------------


@frozen(kw_only=True)
class SubscribeOp:
    """``{"op": "subscribe", "topics": [...], "since"?: N}``."""

    topics: list[str]
    since: int | None = None


@frozen(kw_only=True)
class UnsubscribeOp:
    """``{"op": "unsubscribe", "topics": [...]}``."""

    topics: list[str]


@frozen(kw_only=True)
class SendMessageOp:
    """``{"op": "send_message", "session_id", "content"}``."""

    content: str
    session_id: str | None = None


@frozen(kw_only=True)
class CancelOp:
    """``{"op": "cancel", "session_id"}``."""

    session_id: str | None = None


@frozen(kw_only=True)
class ApproveOp:
    """``{"op": "approve", "approval_id", "decision", "remember"?}``."""

    approval_id: str
    decision: Literal["approve", "deny"]
    remember: Literal["session"] | None = None


@frozen(kw_only=True)
class PingOp:
    """``{"op": "ping"}``."""

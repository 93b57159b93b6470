"""The agent interface: turn a session's history and a new user message into a streamed reply.

Agents know nothing about HTTP, the bus or the store. A reply is an async iterator of text
deltas; cancellation arrives as :class:`asyncio.CancelledError` at an ``await`` (clean up in
``finally``); a tool call is put to a person through :meth:`ApprovalGate.request`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from attrs import field, frozen

from aiosvc.errors import Unprocessable
from aiosvc.models import ApprovalStatus, Message, Session


class AgentError(Exception):
    """A reply failed for a reason the agent can name; the message ends ``failed``.

    ``details`` are facts for the operator's log (an exit status, the upstream's URL), not
    shown to clients.
    """

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class ApprovalGate(Protocol):
    """Asks a person whether the agent may run a tool."""

    async def request(self, tool: str, input: Any, *, announced: bool = False) -> ApprovalStatus:
        """Wait for the outcome: approved, denied or expired (nobody answered in time).
        ``announced``: the agent already published the call's ``tool.use``."""
        ...


class ReplyRecorder(Protocol):
    """Where an agent that uses tools records what it does, for clients and the history."""

    def tool_use(self, call_id: str, tool: str, input: Any) -> None:
        """Publish that the model asked for a tool call."""
        ...

    async def tool_result(
        self, call_id: str, tool: str, output: str, *, error_code: str | None = None
    ) -> None:
        """Store the call's outcome as a ``tool`` message and publish it (an error when
        ``error_code`` is given)."""
        ...

    def usage(self, input_tokens: int, output_tokens: int) -> None:
        """Add the tokens the upstream counted to the reply's."""
        ...


@frozen(kw_only=True)
class Turn:
    """Everything an agent gets for one reply."""

    session: Session
    prompt: str  # the new user message
    reply_id: str
    approvals: ApprovalGate
    #: For agents that call tools; None where nothing records them.
    recorder: ReplyRecorder | None = None
    load_history: Callable[[], Awaitable[Sequence[Message]]] = field(repr=False)

    async def history(self) -> Sequence[Message]:
        """The finished conversation before the prompt, oldest first (loaded on demand: an
        agent that does not use it does not pay for it)."""
        return await self.load_history()


class Agent(abc.ABC):
    """A configured agent backend."""

    kind: ClassVar[str]
    #: The per-session options (``model``, ``system_prompt``) a session of this agent may set.
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    def reply(self, turn: Turn) -> AsyncGenerator[str, None]:
        """Stream the reply to ``turn`` as text deltas."""

    def describe(self) -> Mapping[str, Any]:
        """The non-secret part of this agent's configuration."""
        return {}

    async def models(self) -> list[dict[str, Any]]:
        """The models the agent's upstream offers; a kind without any is refused."""
        raise Unprocessable(
            f"agent {self.name!r} ({self.kind}) has no upstream models",
            code="unsupported_option",
            details={"agent": self.name, "kind": self.kind},
        )

    async def close(self) -> None:  # noqa: B027  # most agents hold nothing to release
        """Release what the agent holds (connections, processes)."""

"""Reading a streamed chat completion: content deltas, tool calls assembled from their
pieces, and the token counts.

Servers stream a tool call in pieces: the first piece of each call carries its ``index``,
``id`` and function ``name``, later ones carry more of its ``arguments`` (a JSON text split
anywhere); several calls of one turn are told apart by ``index`` and may interleave. Some
servers repeat the ``id`` or the whole ``name`` in every piece, some leave out ``index`` for
a single call: all of that is assembled to one call per index, in index order.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, TypeGuard

import aiohttp
import attrs
import orjson

from aiosvc.agents.base import AgentError


@attrs.define
class ToolCall:
    """One tool call of the model, as assembled so far."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@attrs.define
class Round:
    """What one streamed completion gave besides its text."""

    calls: dict[int, ToolCall] = attrs.field(factory=dict)
    usage: tuple[int, int] | None = None  # (prompt tokens, completion tokens)

    def ordered(self) -> list[ToolCall]:
        """The calls in index order."""
        return [self.calls[i] for i in sorted(self.calls)]

    def take(self, chunk: dict[str, Any]) -> str:
        """Take one chunk's tool-call pieces and usage; return its content delta."""
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if _count(prompt) and _count(completion):
                self.usage = (prompt, completion)
        choices = chunk.get("choices")
        if choices is None and isinstance(usage, dict):
            return ""  # a usage chunk that leaves choices out
        if choices is None:
            raise AgentError("malformed_stream", "a chunk has no choices")
        if not isinstance(choices, list):
            raise AgentError("malformed_stream", "a chunk's choices are not a list")
        if not choices:
            return ""  # the usage chunk, at the end
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            return ""
        pieces = delta.get("tool_calls")
        if isinstance(pieces, list):
            for position, piece in enumerate(pieces):
                if isinstance(piece, dict):
                    self._piece(piece, position)
        content = delta.get("content")
        return content if isinstance(content, str) else ""

    def _piece(self, piece: dict[str, Any], position: int) -> None:
        given = piece.get("index")
        index = given if isinstance(given, int) and _count(given) else position
        call = self.calls.get(index)
        if call is None:
            call = self.calls[index] = ToolCall(index)
        ident = piece.get("id")
        if isinstance(ident, str) and ident and not call.id:
            call.id = ident
        function = piece.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        if isinstance(name, str) and name and name != call.name:
            call.name += name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments += arguments
        elif isinstance(arguments, dict):  # a server that sends them parsed
            call.arguments += orjson.dumps(arguments).decode()


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def chunks(response: aiohttp.ClientResponse) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON chunks of an SSE body, until ``[DONE]`` or the end of the body (some servers
    end a stream without ``[DONE]``)."""
    try:
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue  # comments, event names, blank separators
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            chunk = orjson.loads(payload)
            if not isinstance(chunk, dict):
                raise AgentError("malformed_stream", "a stream chunk is not a JSON object")
            if "error" in chunk:
                raise AgentError("upstream_error", error_text(orjson.dumps(chunk)))
            yield chunk
    except ValueError as exc:  # aiohttp: a line longer than its limit
        if isinstance(exc, orjson.JSONDecodeError):
            raise
        raise AgentError("malformed_stream", f"a stream line was too long: {exc}") from None


def error_text(raw: bytes) -> str:
    """The upstream's error message, from its JSON when it sends some, else its text."""
    try:
        body = orjson.loads(raw)
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        if isinstance(message, str):
            return message[:500]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return raw[:500].decode("utf-8", errors="replace").strip() or "no details"

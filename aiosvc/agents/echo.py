"""The built-in echo agent: streams the user's text back, and can ask for a tool."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from aiosvc.agents.base import Agent, AgentError, Turn

TOOL_PATTERN = re.compile(r"/tool\s+(\S+)(?:\s+(.*))?", re.DOTALL)
#: How many deltas a reply is split into at most ("several", whatever its length).
MAX_DELTAS = 8


def split_deltas(text: str, parts: int = MAX_DELTAS) -> list[str]:
    """Split ``text`` into at most ``parts`` pieces, at word boundaries where it has them."""
    words = re.findall(r"\s*\S+\s*|\s+", text)
    if len(words) <= parts:
        return words or [text]
    size, extra = divmod(len(words), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append("".join(words[start:end]))
        start = end
    return pieces


class EchoAgent(Agent):
    """Echoes the prompt verbatim in several deltas, ``delay_ms`` apart."""

    kind = "echo"

    def __init__(self, name: str, *, delay_ms: int = 0) -> None:
        super().__init__(name)
        self.delay_ms = delay_ms

    def describe(self) -> Mapping[str, Any]:
        """The agent's settings."""
        return {"delay_ms": self.delay_ms}

    async def reply(self, turn: Turn) -> AsyncGenerator[str, None]:
        """Echo the prompt; ``/tool NAME {json}`` asks for approval first."""
        match = TOOL_PATTERN.fullmatch(turn.prompt.strip())
        if match is not None:
            tool, raw = match.group(1), (match.group(2) or "").strip()
            tool_input = _parse_input(raw)
            outcome = await turn.approvals.request(tool, tool_input)
            text = f"tool {tool} {outcome.value}"
        else:
            text = turn.prompt
        for index, piece in enumerate(split_deltas(text)):
            if index and self.delay_ms:
                await asyncio.sleep(self.delay_ms / 1000)
            yield piece


def _parse_input(raw: str) -> Any:
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AgentError("invalid_tool_input", f"the tool input is not valid JSON: {exc}") from None

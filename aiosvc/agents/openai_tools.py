"""An ``openai`` agent's tools: offered as function definitions, each call the model makes
checked, announced, approved, run through MCP and answered.

Function names may hold only letters, digits, ``_`` and ``-`` (at most 64), so the tool
``server.tool`` is offered as ``server__tool`` (other characters become ``_``; a name that
would repeat another gets a number) and mapped back when the model calls it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import structlog

from aiosvc.agents.base import ReplyRecorder, Turn
from aiosvc.agents.openai_stream import ToolCall
from aiosvc.agents.tools import McpManager, ToolOutcome, ToolSpec
from aiosvc.models import ApprovalStatus

log = structlog.get_logger(__name__)

#: A tool's output is cut to this many bytes of UTF-8, for the model and for clients.
OUTPUT_LIMIT = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def function_name(spec: ToolSpec, taken: set[str]) -> str:
    """The function name that offers ``spec``, unlike every name in ``taken``."""
    base = _UNSAFE.sub("_", f"{spec.server}__{spec.tool}")[:64]
    name, number = base, 1
    while name in taken:
        number += 1
        suffix = f"_{number}"
        name = base[: 64 - len(suffix)] + suffix
    taken.add(name)
    return name


@attrs.frozen
class Toolbox:
    """The tools offered in one reply, by function name."""

    by_function: dict[str, ToolSpec]

    @classmethod
    def of(cls, specs: Sequence[ToolSpec]) -> Toolbox:
        """Name each tool for the upstream."""
        taken: set[str] = set()
        return cls({function_name(spec, taken): spec for spec in specs})

    def definitions(self) -> list[dict[str, Any]]:
        """The ``tools`` of a chat-completions request."""
        return [
            {
                "type": "function",
                "function": {
                    "name": function,
                    "description": spec.description or spec.name,
                    "parameters": spec.input_schema or {"type": "object", "properties": {}},
                },
            }
            for function, spec in self.by_function.items()
        ]


def cut(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, at a character boundary."""
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def approved_without_asking(tool: ToolSpec, auto_approve: Sequence[str]) -> bool:
    """Tell whether ``auto_approve`` names the tool or its whole server."""
    return tool.name in auto_approve or tool.server in auto_approve


async def run_call(
    call: ToolCall,
    toolbox: Toolbox,
    turn: Turn,
    recorder: ReplyRecorder,
    manager: McpManager,
    *,
    auto_approve: Sequence[str],
    timeout_s: float,
) -> str:
    """Announce, approve, run and record one call; return what the model is told.

    Every way a call can go wrong (arguments that are not a JSON object, a tool not offered,
    a denial or an expiry, the tool's own error, a timeout) is the call's error output: the
    model reads it and goes on; nothing here fails the reply.
    """
    spec = toolbox.by_function.get(call.name)
    tool = spec.name if spec is not None else call.name
    arguments, problem = _arguments(call.arguments)
    shown = arguments if arguments is not None else {"arguments": call.arguments}
    recorder.tool_use(call.id, tool, shown)
    if problem is None and spec is None:
        problem = f"unknown tool {call.name!r}", "unknown_tool"
    if problem is None and spec is not None and arguments is not None:
        if approved_without_asking(spec, auto_approve):
            decided = ApprovalStatus.APPROVED
        else:
            decided = await turn.approvals.request(spec.name, arguments, announced=True)
        if decided is ApprovalStatus.APPROVED:
            outcome = await manager.call(spec.name, arguments, timeout_s)
        else:
            refused = _refusal(spec.name, decided)
            outcome = ToolOutcome(output=refused, is_error=True, code="not_approved")
    else:
        message, code = problem or ("the call cannot run", "invalid_arguments")
        outcome = ToolOutcome(output=message, is_error=True, code=code)
    output = cut(outcome.output)
    await recorder.tool_result(
        call.id, tool, output, error_code=outcome.code if outcome.is_error else None
    )
    return f"error: {output}" if outcome.is_error else output


def _refusal(tool: str, outcome: ApprovalStatus) -> str:
    """What the model is told of a call that was not approved: denied, or left unanswered."""
    if outcome is ApprovalStatus.DENIED:
        return f"the call of {tool} was denied by the user"
    return f"the call of {tool} was not approved: nobody answered the request in time"


def _arguments(raw: str) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """The call's arguments as an object, or why they are not one (message, code)."""
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError as exc:
        return None, (f"the arguments are not valid JSON: {exc}", "invalid_arguments")
    if not isinstance(value, dict):
        return None, ("the arguments are not a JSON object", "invalid_arguments")
    return value, None

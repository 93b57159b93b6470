"""The ``command`` agent's line protocol: a program reports tool use and asks for approval.

With ``protocol = true`` the program gets one end of a Unix socket pair, its file descriptor
number in ``AIOSVC_PROTOCOL_FD``. It writes one JSON object per line::

    {"type": "tool_use", "tool": "shell", "input": {"cmd": "ls"}, "id": 1}

and reads the answer, one line, on the same descriptor::

    {"type": "approval", "decision": "approve", "id": 1}

(``id`` is optional and echoed when given). Everything the program writes is untrusted: a line
that is not JSON, not an object, of another type, without a tool, or over
:data:`MAX_LINE_BYTES` is ignored with a log line (throttled: a program writing junk in a loop
makes one line every few seconds, with a count), and the reply goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import orjson
import structlog

from aiosvc.agents.base import ApprovalGate
from aiosvc.logs.throttle import Throttled
from aiosvc.models import ApprovalStatus
from aiosvc.rules import MAX_TOOL_CHARS

log = structlog.get_logger(__name__)

#: The longest line the program may write; a longer one is skipped (memory stays bounded).
MAX_LINE_BYTES = 256 * 1024


class LineProtocol:
    """Serves one program's requests on our end of the socket pair, one at a time."""

    def __init__(self, sock: socket.socket, approvals: ApprovalGate, program: str) -> None:
        self._sock = sock
        self._approvals = approvals
        self._program = program
        self._ignored = Throttled("agent_protocol_line_ignored", logger=log)

    async def serve(self) -> None:
        """Answer each request until the program closes its end (or the reply ends)."""
        reader, writer = await asyncio.open_unix_connection(sock=self._sock, limit=MAX_LINE_BYTES)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # over the limit: the buffer was dropped
                    self._ignore("line_too_long")
                    continue
                except ConnectionError:
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                answer = await self._answer(line)
                if answer is None:
                    continue
                try:
                    writer.write(orjson.dumps(answer) + b"\n")
                    await writer.drain()
                except ConnectionError:  # the program stopped listening: its loss
                    return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any] | None:
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError:
            self._ignore("not_json")
            return None
        if not isinstance(request, dict):
            self._ignore("not_an_object")
            return None
        if request.get("type") != "tool_use":
            self._ignore("unknown_type")
            return None
        tool = request.get("tool")
        if not isinstance(tool, str) or not 1 <= len(tool) <= MAX_TOOL_CHARS:
            self._ignore("bad_tool")
            return None
        outcome = await self._approvals.request(tool, request.get("input"))
        decision = "approve" if outcome is ApprovalStatus.APPROVED else "deny"
        answer: dict[str, Any] = {"type": "approval", "decision": decision, "status": outcome.value}
        ident = request.get("id")
        if isinstance(ident, str | int) and not isinstance(ident, bool):
            answer["id"] = ident
        return answer

    def _ignore(self, reason: str) -> None:
        self._ignored(program=self._program, reason=reason)

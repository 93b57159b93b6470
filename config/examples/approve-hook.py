#!/usr/bin/env python3
"""Ask the person at aiosvc (dashboard or terminal) before a coding agent runs a tool.

A pre-tool-use hook: the agent CLI runs it before each tool call with the call as JSON on
stdin. It posts the call to ``POST /api/v1/approvals?wait=true`` and blocks until someone
approves or denies it there (or it expires). Exit status: 0 approved, 2 denied, expired or
no answer (the agent's "block this call" convention; the reason goes to stderr).

Reads either Claude Code's PreToolUse input (``{"tool_name", "tool_input", ...}``) or a plain
``{"tool", "input"}``. Settings, from the environment:

``AIOSVC_URL``                the daemon (default ``http://127.0.0.1:8420``)
``AIOSVC_API_KEY``            its API key, when it has keys
``AIOSVC_SESSION_ID``         an aiosvc session to file the approvals under (optional; its
                              "remember for this session" decisions then apply)
``AIOSVC_APPROVAL_TIMEOUT_S`` how long to wait for a person (default 300, at most 3600)

Standard library only. The call's JSON is only ever sent as JSON: nothing of it reaches a
shell, a command line or the terminal unescaped.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

DENY = 2  # what agent CLIs take as "block this tool call"
MAX_INPUT_BYTES = 1024 * 1024
MAX_TOOL_CHARS = 200


def main() -> int:
    """Read the tool call, ask the daemon, exit with its decision."""
    try:
        call = json.loads(sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)[:MAX_INPUT_BYTES])
    except ValueError as exc:
        return refuse(f"the hook's input is not JSON: {exc}")
    if not isinstance(call, dict):
        return refuse("the hook's input is not a JSON object")
    tool = call.get("tool_name", call.get("tool"))
    if not isinstance(tool, str) or not tool:
        return refuse("the hook's input names no tool")
    tool_input = call.get("tool_input", call.get("input"))
    body: dict[str, object] = {
        "tool": tool[:MAX_TOOL_CHARS],
        "input": {} if tool_input is None else tool_input,
        "timeout_s": timeout_s(),
    }
    if os.environ.get("AIOSVC_SESSION_ID"):
        body["session_id"] = os.environ["AIOSVC_SESSION_ID"]
    base = os.environ.get("AIOSVC_URL", "http://127.0.0.1:8420").rstrip("/")
    headers = {"Content-Type": "application/json"}
    if os.environ.get("AIOSVC_API_KEY"):
        headers["X-API-Key"] = os.environ["AIOSVC_API_KEY"]
    request = urllib.request.Request(
        base + "/api/v1/approvals?wait=true",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=float(body["timeout_s"]) + 30) as answer:
            approval = json.load(answer)["data"]
    except urllib.error.HTTPError as exc:
        return refuse(f"aiosvc refused the approval request: HTTP {exc.code} {error_of(exc)}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return refuse(f"no answer from aiosvc at {base}: {exc}")
    status = approval.get("status") if isinstance(approval, dict) else None
    if status == "approved":
        return 0
    return refuse(f"the {tool[:MAX_TOOL_CHARS]!r} call was {status} in aiosvc")


def timeout_s() -> float:
    """The wait asked for: AIOSVC_APPROVAL_TIMEOUT_S, 300 by default, within 1..3600."""
    try:
        value = float(os.environ.get("AIOSVC_APPROVAL_TIMEOUT_S", "300"))
    except ValueError:
        value = 300.0
    return min(max(value, 1.0), 3600.0)


def error_of(exc: urllib.error.HTTPError) -> str:
    """The error envelope's message, if the answer has one."""
    try:
        return str(json.load(exc)["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return ""


def refuse(reason: str) -> int:
    """Say why on stderr (the agent shows it to its model) and block the call."""
    print(ascii(reason)[1:-1], file=sys.stderr)  # escaped: no control characters reach a tty
    return DENY


if __name__ == "__main__":
    sys.exit(main())

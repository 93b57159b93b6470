#!/usr/bin/env python3
"""A complete ``command`` agent that asks before it acts, through aiosvc's line protocol.

Configure it as::

    [agents.reader]
    kind = "command"
    argv = ["python3", "/path/to/protocol-agent.py"]
    protocol = true

What it does with the new message:

- ``read: PATH``: asks for approval to run its ``read_file`` tool on ``PATH``; approved, it
  prints the file's first lines, denied (or expired) it says so.
- anything else: says how many messages the conversation has and repeats the last one.

It reads the conversation from the JSON file ``AIOSVC_CONVERSATION`` names, and talks to the
daemon on the socket whose descriptor ``AIOSVC_PROTOCOL_FD`` holds: one JSON object per line
each way. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys

MAX_LINES = 20


class Daemon:
    """The protocol socket: ask, and read the answer."""

    def __init__(self, fd: int) -> None:
        self.stream = os.fdopen(fd, "r+b", buffering=0)
        self.asked = 0

    def approve(self, tool: str, tool_input: object) -> bool:
        """Report a tool use and wait for the person's decision (True: approved)."""
        self.asked += 1
        request = {"type": "tool_use", "id": self.asked, "tool": tool, "input": tool_input}
        self.stream.write(json.dumps(request).encode() + b"\n")
        line = b""
        while not line.endswith(b"\n"):
            chunk = self.stream.read(1)
            if not chunk:
                return False  # the daemon closed the socket: the reply is over
            line += chunk
        answer = json.loads(line)
        return answer.get("type") == "approval" and answer.get("decision") == "approve"


def main() -> int:
    """Answer the last user message of the conversation."""
    with open(os.environ["AIOSVC_CONVERSATION"], encoding="utf-8") as file:
        conversation = json.load(file)
    messages = conversation["messages"]
    prompt = messages[-1]["content"].strip()
    if not prompt.startswith("read:"):
        print(f"{len(messages)} messages so far; you said: {prompt}", flush=True)
        return 0
    path = prompt.removeprefix("read:").strip()
    fd = os.environ.get("AIOSVC_PROTOCOL_FD")
    if fd is None:
        print("this agent needs protocol = true to ask before reading files", file=sys.stderr)
        return 1
    print(f"asking to read {path}\n", flush=True)
    if not Daemon(int(fd)).approve("read_file", {"path": path}):
        print("reading was denied", flush=True)
        return 0
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for number, line in enumerate(file):
                if number == MAX_LINES:
                    break
                print(line, end="", flush=True)
    except OSError as exc:
        print(f"cannot read it: {exc.strerror}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writing the conversation to the terminal: whole lines, and replies as they stream."""

from __future__ import annotations

import os
from typing import TextIO

DIM = "\x1b[2m"
BOLD = "\x1b[1m"
RESET = "\x1b[0m"


def wants_color(stream: TextIO) -> bool:
    """Tell whether ``stream`` is a terminal that takes ANSI styles (honours ``NO_COLOR``)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


class Display:
    """Line-oriented output with at most one open line: the reply being streamed.

    Plain text when the output is not a terminal, so scripts and tests can read it line by line.
    """

    def __init__(self, out: TextIO, *, color: bool | None = None) -> None:
        self._out = out
        self.color = wants_color(out) if color is None else color
        self.open: str | None = None  # the message whose reply line is not yet ended

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
            self._out.flush()
        except (BrokenPipeError, ValueError):  # the reader went away; nothing to tell it
            pass

    def end_line(self) -> None:
        """End the open reply line, if any."""
        if self.open is not None:
            self.open = None
            self._write("\n")

    def line(self, text: str) -> None:
        """Write one line of conversation (ending an open reply line first)."""
        self.end_line()
        self._write(text + "\n")

    def user(self, text: str) -> None:
        """Write a user's message, each of its lines prefixed with ``> ``."""
        shown = "\n".join("> " + part for part in text.split("\n"))
        self.line(f"{BOLD}{shown}{RESET}" if self.color else shown)

    def notice(self, text: str) -> None:
        """Write a bracketed notice such as ``[status idle]`` (dimmed on a terminal)."""
        shown = f"[{text}]"
        self.line(f"{DIM}{shown}{RESET}" if self.color else shown)

    def stream(self, message_id: str, text: str) -> None:
        """Continue a reply's line without ending it."""
        if not text:
            return
        if self.open != message_id:
            self.end_line()
            self.open = message_id
        self._write(text)

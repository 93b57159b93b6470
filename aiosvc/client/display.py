"""Writing the conversation to the terminal: whole lines, and replies as they stream."""

from __future__ import annotations

import os
import re
from typing import TextIO

DIM = "\x1b[2m"
BOLD = "\x1b[1m"
RESET = "\x1b[0m"

# What a terminal would act on rather than show: C0 controls but tab and newline (ESC starts
# every escape sequence: screen clears, window titles, OSC 52 clipboard writes), DEL, the C1
# controls (0x9b is a one-byte CSI to some terminals) and the bidirectional overrides that
# make text read differently from what it is.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_CONTROLS}]")
_UNSAFE_OR_NEWLINE = re.compile(f"[{_CONTROLS}\n]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, *, newlines: bool = True) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``) instead of acted
    on; with ``newlines=False`` a newline is escaped too (for one-line notices)."""
    pattern = _UNSAFE if newlines else _UNSAFE_OR_NEWLINE
    return pattern.sub(_escape, text)


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
    Text from the wire never reaches the terminal as control characters: every public method
    escapes what it is given (see :func:`terminal_safe`); only this class's own styles are sent.
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
        self._line(terminal_safe(text))

    def _line(self, shown: str) -> None:
        self.end_line()
        self._write(shown + "\n")

    def user(self, text: str) -> None:
        """Write a user's message, each of its lines prefixed with ``> ``."""
        shown = "\n".join("> " + part for part in terminal_safe(text).split("\n"))
        self._line(f"{BOLD}{shown}{RESET}" if self.color else shown)

    def notice(self, text: str) -> None:
        """Write a bracketed one-line notice such as ``[status idle]`` (dimmed on a terminal)."""
        shown = f"[{terminal_safe(text, newlines=False)}]"
        self._line(f"{DIM}{shown}{RESET}" if self.color else shown)

    def stream(self, message_id: str, text: str) -> None:
        """Continue a reply's line without ending it."""
        if not text:
            return
        if self.open != message_id:
            self.end_line()
            self.open = message_id
        self._write(terminal_safe(text))

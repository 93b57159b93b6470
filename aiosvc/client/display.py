"""Writing the conversation to the terminal: labelled lines, and replies as they stream."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
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
    """Line-oriented output with at most one open line: the message being streamed.

    Every line of a message starts with its author's label (``you> ``, ``echo> ``), so a line
    of a message can never pass for one of the client's own notices (``[status idle]``).
    Plain text when the output is not a terminal, so scripts and tests can read it line by line.
    Text from the wire never reaches the terminal as control characters: every public method
    escapes what it is given (see :func:`terminal_safe`); only this class's own styles are sent.

    With ``whole_lines`` only whole lines are written (an input line is drawn below them); the
    open line waits in :attr:`partial`, and :attr:`on_change` is called whenever it changes.
    """

    def __init__(
        self, out: TextIO, *, color: bool | None = None, whole_lines: bool = False
    ) -> None:
        self._out = out
        self.color = wants_color(out) if color is None else color
        self.whole_lines = whole_lines
        self.open: str | None = None  # the message whose line is not yet ended
        self._partial: list[str] = []  # with whole_lines: the open line's pieces, unwritten
        self.on_change: Callable[[], None] | None = None
        self._label = ""  # the open message's label, styled
        self._line_start = True  # the open message's next character starts a line

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
            self._out.flush()
        except (BrokenPipeError, ValueError):  # the reader went away; nothing to tell it
            pass

    def _emit(self, text: str) -> None:
        if not self.whole_lines:
            self._write(text)
            return
        if "\n" in text:  # (only the new text is searched: a long line stays linear)
            done, rest = text.rsplit("\n", 1)
            self._write("".join(self._partial) + done + "\n")
            self._partial = [rest] if rest else []
        else:
            self._partial.append(text)
        if self.on_change is not None:
            self.on_change()

    @property
    def partial(self) -> str:
        """With ``whole_lines``: the open line's text, not yet written."""
        if len(self._partial) > 1:  # joined once for every read until more comes
            self._partial = ["".join(self._partial)]
        return self._partial[0] if self._partial else ""

    def styled(self, text: str, style: str) -> str:
        """``text`` in ``style`` (one of this module's SGR codes) when colour is on."""
        return f"{style}{text}{RESET}" if self.color else text

    def end_line(self) -> None:
        """End the open message's line, if any."""
        if self.open is not None:
            self.open = None
            if not self._line_start:
                self._emit("\n")
            self._line_start = True

    def line(self, text: str) -> None:
        """Write one line of the client's own (wire text in it escaped, newlines too)."""
        self._line(terminal_safe(text, newlines=False))

    def _line(self, shown: str) -> None:
        self.end_line()
        self._emit(shown + "\n")

    def user(self, text: str) -> None:
        """Write a user's message, each of its lines labelled ``you> ``."""
        self.message(None, "you", text)

    def message(self, message_id: str | None, label: str, text: str) -> None:
        """Write a whole message as lines labelled ``label> ``."""
        self.end_line()
        self.stream(message_id or "", text, label)
        self.end_line()

    def notice(self, text: str) -> None:
        """Write a bracketed one-line notice such as ``[status idle]`` (dimmed on a terminal)."""
        self._line(self.styled(f"[{terminal_safe(text, newlines=False)}]", DIM))

    def stream(self, message_id: str, text: str, label: str) -> None:
        """Continue a message's line without ending it; each of its lines labelled."""
        if not text:
            return
        if self.open != message_id:
            self.end_line()
            self.open = message_id
            self._label = self.styled(f"{terminal_safe(label, newlines=False)}>", BOLD) + " "
        pieces = []
        for index, part in enumerate(terminal_safe(text).split("\n")):
            if index:
                pieces.append("\n")
                self._line_start = True
            if part:
                if self._line_start:
                    pieces.append(self._label)
                    self._line_start = False
                pieces.append(part)
        self._emit("".join(pieces))

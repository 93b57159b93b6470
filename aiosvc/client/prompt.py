"""The input line on a terminal: prompt_toolkit's, with editing and history, drawn below
the conversation.

The conversation is printed above the input line (prompt_toolkit's ``patch_stdout``), in whole
lines: the line of a reply still streaming is drawn as part of the prompt, above the input, so
what the user has half typed is never overwritten nor mixed with the reply.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Iterator

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import ANSI
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from aiosvc.client.display import BOLD, Display

#: Our own styles in a partial line (text from the wire has no ESC left: it is escaped).
_STYLES = re.compile(r"\x1b\[[0-9;]*m")
#: Rows of a streaming line drawn above the input at most; the whole line is printed at its end.
PARTIAL_ROWS = 3


def usable(stdin_fd: int = 0) -> bool:
    """Tell whether standard input and output are a terminal that can draw an input line."""
    if os.environ.get("TERM") in ("dumb", "unknown"):
        return False
    try:
        return os.isatty(stdin_fd) and sys.stdout.isatty()
    except ValueError:  # closed
        return False


@contextlib.contextmanager
def above_prompt() -> Iterator[None]:
    """Route standard output above the input line while the block runs (styles kept: only
    the client's own reach it)."""
    with patch_stdout(raw=True):
        yield


class PromptReader:
    """Reads lines typed at a prompt_toolkit input line; the display's open line sits above it.

    Same interface as :class:`aiosvc.client.stdin.LineReader`. History is kept in memory for
    the run: what was typed is never written to disk.
    """

    def __init__(self, display: Display) -> None:
        self.display = display
        self.interrupted = False  # Ctrl-C: leave at once
        self.session: PromptSession[str] = PromptSession(history=InMemoryHistory())
        display.on_change = self.session.app.invalidate

    def start(self) -> None:
        """Nothing to start: each :meth:`get` shows the input line."""

    async def get(self) -> str | None:
        """The next line typed; None at Ctrl-D on an empty line, or at Ctrl-C."""
        try:
            return await self.session.prompt_async(self._message)
        except EOFError:
            return None
        except KeyboardInterrupt:
            self.interrupted = True
            return None

    def _message(self) -> ANSI:
        prompt = self.display.styled("you>", BOLD) + " "
        partial = self.display.partial
        # Once a line is entered the prompt is drawn a last time, to stay on the screen: the
        # reply's partial line must not stay with it (the whole line is printed at its end).
        if not partial or self.session.app.is_done:
            return ANSI(prompt)
        width = shutil.get_terminal_size().columns
        limit = max(width * PARTIAL_ROWS - 1, 20)
        if len(partial) > limit:  # the tail, without a style cut in half
            partial = "…" + _STYLES.sub("", partial)[-limit + 1 :]
        return ANSI(partial + "\n" + prompt)

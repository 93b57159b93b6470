"""What a typed line asks for: text to send, a local command, or a slash word refused.

A line whose first word starts with ``/`` is a command of the client, never sent: an unknown
one (a typo such as ``/qiut``) is refused with a hint rather than sent to the agent. A line
starting with ``//`` is sent with one slash less, so ``//tool NAME {json}`` reaches the agent
as ``/tool NAME {json}``. Pure functions only: both terminal clients read lines through here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import attrs

#: The line client's commands: usage after the word, and what the command does.
COMMANDS: Mapping[str, tuple[str, str]] = {
    "/approve": ("[ID]", "approve the newest pending approval (or ID)"),
    "/deny": ("[ID]", "deny the newest pending approval (or ID)"),
    "/cancel": ("", "stop the running reply"),
    "/help": ("", "list the commands"),
    "/quit": ("", "leave once the reply in flight has finished (end of input does too)"),
}


@attrs.frozen
class Send:
    """Send ``text`` as a message."""

    text: str


@attrs.frozen
class Command:
    """Run the client's command ``name`` (``/approve``) with the words after it."""

    name: str
    args: tuple[str, ...]


@attrs.frozen
class Refused:
    """A slash word that is no command: not sent; ``message`` says why and what to type."""

    word: str
    suggestion: str | None  # the closest command, if one is close

    @property
    def message(self) -> str:
        """The notice to show."""
        guess = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return (
            f"unknown command {self.word}{guess} (/help lists the commands; "
            f"start with // to send it)"
        )


Parsed = Send | Command | Refused


def parse(line: str, commands: Mapping[str, object] = COMMANDS) -> Parsed | None:
    """What ``line`` asks for (None for a blank line); ``commands`` are the known words."""
    stripped = line.strip()
    if not stripped:
        return None
    if not stripped.startswith("/"):
        return Send(line)
    if stripped.startswith("//"):
        return Send(stripped[1:])
    word, *args = stripped.split()
    if word in commands:
        return Command(word, tuple(args))
    close = difflib.get_close_matches(word, list(commands), n=1, cutoff=0.6)
    return Refused(word, close[0] if close else None)


def help_lines(commands: Mapping[str, tuple[str, str]] = COMMANDS) -> list[str]:
    """One line per command (``/approve [ID]: approve ...``), then how to send a slash."""
    lines = []
    for word, (usage, meaning) in commands.items():
        lines.append(f"{word}{' ' + usage if usage else ''}: {meaning}")
    lines.append("//TEXT: send /TEXT as a message (any other line is sent as it is)")
    return lines

"""What a typed line means: a command (``/word``), a message, or a typo refused locally.

Both terminal clients read lines the same way. A line whose first word starts with ``/`` is a
command; an unknown one is refused here rather than sent to the agent (``/qiut`` is a typo,
not a message). A line starting with ``//`` is a message that starts with one slash, so
``//tool NAME {json}`` reaches the agent as ``/tool NAME {json}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs


@attrs.frozen
class Message:
    """Text to send to the agent as it is."""

    text: str


@attrs.frozen
class Command:
    """A known ``/word`` and the words after it."""

    name: str
    args: tuple[str, ...]


@attrs.frozen
class Refused:
    """A line that is neither: why, for a person to read."""

    reason: str


Line = Message | Command | Refused


def parse(line: str, commands: Mapping[str, str]) -> Line | None:
    """What ``line`` asks for, given the client's ``commands`` (``/word`` to its help);
    None for a blank line."""
    if not line.strip():
        return None
    if line.startswith("//"):
        return Message(line[1:])
    if not line.startswith("/"):
        return Message(line)
    word, *rest = line.split()
    if word in commands:
        return Command(word, tuple(rest))
    return Refused(
        f"unknown command {word}: /help lists the commands; "
        f"start the line with // to send it as a message (//{line[1:]})"
    )


def help_lines(commands: Mapping[str, str]) -> list[str]:
    """The ``/help`` text: one line per command, then how to send a line starting with /."""
    width = max(len(name) for name in commands)
    lines = [f"{name.ljust(width)}  {text}" for name, text in commands.items()]
    lines.append(f"{'//TEXT'.ljust(width)}  send /TEXT as a message (e.g. //tool NAME {{json}})")
    return lines

"""What a typed line means to both terminal clients (aiosvc/client/slash.py)."""

from __future__ import annotations

import pytest

from aiosvc.client import slash

COMMANDS = {"/help": "list the commands", "/approve": "[ID] approve", "/quit": "leave"}


@pytest.mark.parametrize(
    ("line", "meaning"),
    [
        ("hello", slash.Message("hello")),
        ("  indented /x", slash.Message("  indented /x")),
        ("/approve", slash.Command("/approve", ())),
        ("/approve apr_1 extra", slash.Command("/approve", ("apr_1", "extra"))),
        ("//tool shell {}", slash.Message("/tool shell {}")),
        ("//", slash.Message("/")),
        ("", None),
        ("   ", None),
    ],
)
def test_lines_are_messages_commands_or_nothing(line: str, meaning: slash.Line | None) -> None:
    assert slash.parse(line, COMMANDS) == meaning


@pytest.mark.parametrize("line", ["/qiut", "/", "/tool shell {}", "/HELP"])
def test_an_unknown_slash_word_is_refused_with_a_hint(line: str) -> None:
    refused = slash.parse(line, COMMANDS)
    assert isinstance(refused, slash.Refused)
    word = line.split()[0]
    assert refused.reason == (
        f"unknown command {word}: /help lists the commands; "
        f"start the line with // to send it as a message (/{line})"
    )


def test_help_lists_every_command_and_the_double_slash() -> None:
    assert slash.help_lines(COMMANDS) == [
        "/help     list the commands",
        "/approve  [ID] approve",
        "/quit     leave",
        "//TEXT    send /TEXT as a message (e.g. //tool NAME {json})",
    ]

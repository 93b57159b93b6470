"""What a typed line asks for (aiosvc.client.slash): text to send, a command, or a refusal."""

from __future__ import annotations

import pytest

from aiosvc.client.slash import COMMANDS, Command, Refused, Send, help_lines, parse


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("", None),
        ("   \t", None),
        ("hello /quit", Send("hello /quit")),
        ("  keeps its spaces ", Send("  keeps its spaces ")),
        ("/quit", Command("/quit", ())),
        ("  /approve apr_1  ", Command("/approve", ("apr_1",))),
        ("/deny a b", Command("/deny", ("a", "b"))),
        ('//tool NAME {"k": 1}', Send('/tool NAME {"k": 1}')),
        ("//", Send("/")),
        ("/qiut", Refused("/qiut", "/quit")),
        ("/aprove apr_1", Refused("/aprove", "/approve")),
        ("/usr/bin/env", Refused("/usr/bin/env", None)),
        ("/", Refused("/", None)),
        ("/Quit", Refused("/Quit", "/quit")),
    ],
)
def test_a_line_is_sent_run_or_refused(line: str, parsed: object) -> None:
    assert parse(line) == parsed


def test_another_client_names_its_own_commands() -> None:
    assert parse("/rename x", {"/rename": None}) == Command("/rename", ("x",))
    assert parse("/quit", {"/rename": None}) == Refused("/quit", None)


def test_a_refusal_says_what_to_type() -> None:
    assert Refused("/qiut", "/quit").message == (
        "unknown command /qiut; did you mean /quit? (/help lists the commands; "
        "start with // to send it)"
    )
    assert Refused("/x", None).message.startswith("unknown command /x (/help")


def test_help_lists_every_command_then_the_double_slash() -> None:
    lines = help_lines()
    assert [line.split(":")[0].split()[0] for line in lines[:-1]] == list(COMMANDS)
    assert lines[0] == "/approve [ID]: approve the newest pending approval (or ID)"
    assert lines[-1].startswith("//TEXT: send /TEXT")

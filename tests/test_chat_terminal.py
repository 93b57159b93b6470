"""The installed ``aiosvc chat`` in a real terminal (tmux), typed at as a person would
(``send-keys``) and read from the screen (``capture-pane``): the input line keeps what is half
typed while a reply streams, arrow keys edit it, Up recalls what was sent, and text from the
wire cannot clear the screen, set the title or write the clipboard."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests import installed, test_chat
from tests.serving import Server, rest
from tests.test_chat_lines import SHOWN, user_messages

server = test_chat.server  # a real server with a slow echo agent beside the default one

TIMEOUT = 30.0
#: What the terminal multiplexer is given: a buffer for an OSC 52 write to land in (so that a
#: leak would show), and the pane kept after its program exits (its last screen stays readable).
CONFIG = "set -g set-clipboard on\nset -g remain-on-exit on\nset -g history-limit 1000\n"
#: The pane runs the command under a shell that writes its exit status to a file: tmux 3.3a
#: sometimes never reaps a pane's process (a zombie for good, ``#{pane_dead_status}`` empty).
#: The command's words are the shell's arguments, never part of its script.
RECORD_STATUS = 'status="$1"; shift; "$@"; echo "$?" >"$status"'
_names = itertools.count()

Screen = list[str]


class Terminal:
    """One tmux server of the test's own, with one 100x40 window running a command."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.name = f"aiosvc-test-{os.getpid()}-{next(_names)}"
        self.config = tmp_path / "tmux.conf"
        self.config.write_text(CONFIG)
        self.status = tmp_path / f"{self.name}.status"
        self.env = env

    def tmux(self, *args: str) -> str:
        """Run one tmux command on this server; its output."""
        result = subprocess.run(
            ["tmux", "-L", self.name, "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=10,
            check=True,
        )
        return result.stdout

    def start(self, *argv: str) -> None:
        """Run ``argv`` in the window."""
        recorded = ("sh", "-c", RECORD_STATUS, "sh", str(self.status), *argv)
        self.tmux("new-session", "-d", "-s", "chat", "-x", "100", "-y", "40", "--", *recorded)

    async def exit_status(self) -> int:
        """Wait for the command to end; its exit status."""
        async with asyncio.timeout(TIMEOUT):
            while not (text := self.status.read_text() if self.status.exists() else ""):
                await asyncio.sleep(0.05)
        return int(text)

    def keys(self, *keys: str) -> None:
        """Press keys by name (``Enter``, ``Left``, ``Up``, ``C-d``)."""
        self.tmux("send-keys", "-t", "chat", *keys)

    def type(self, text: str) -> None:
        """Type ``text`` literally."""
        self.tmux("send-keys", "-t", "chat", "-l", text)

    def screen(self) -> Screen:
        """The visible lines, without trailing blanks and blank lines at the bottom."""
        lines = [
            line.rstrip() for line in self.tmux("capture-pane", "-p", "-t", "chat").split("\n")
        ]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def show(self, variable: str) -> str:
        """A tmux variable of the pane (``pane_title``), or a format (``#{pane_pid}``)."""
        shown = variable if variable.startswith("#") else f"#{{{variable}}}"
        return self.tmux("display-message", "-p", "-t", "chat", shown).strip()

    async def wait_for(self, predicate: Callable[[Screen], bool]) -> Screen:
        """Poll the screen until ``predicate`` holds; return that screen.

        Assertions on the screen go through here: a capture can fall in the middle of a redraw
        (the input line erased, output written above it, the input line drawn again)."""
        screen: Screen = []

        def holds(screen: Screen) -> bool:
            try:
                return predicate(screen)
            except IndexError:
                return False

        try:
            async with asyncio.timeout(TIMEOUT):
                while not holds(screen := self.screen()):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError("the screen never showed it:\n" + "\n".join(screen)) from None
        return screen

    async def wait_line(self, line: str) -> Screen:
        """Wait until ``line`` is on the screen."""
        return await self.wait_for(lambda screen: line in screen)

    async def prompt(self, typed: str = "") -> Screen:
        """Wait until the bottom line is the input line holding ``typed``."""
        return await self.wait_for(lambda s: bool(s) and s[-1] == f"you> {typed}".rstrip())

    def close(self) -> None:
        """Kill the tmux server and what runs in it."""
        subprocess.run(
            ["tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=10, check=False
        )


StartTerminal = Callable[..., Terminal]


@pytest.fixture
async def terminal(tmp_path: Path, server: Server) -> AsyncIterator[StartTerminal]:
    """Start ``aiosvc chat ARGS`` in a terminal of its own, against the test's server."""
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        term = Terminal(tmp_path, installed.environ(AIOSVC_URL=server.url, TERM="xterm"))
        opened.append(term)
        term.start(*installed.argv("chat", *args))
        return term

    yield start
    for term in opened:
        term.close()


async def test_half_typed_text_survives_a_streaming_reply(
    server: Server, terminal: StartTerminal
) -> None:
    term = terminal("--agent", "slow")
    screen = await term.prompt()
    session_id = screen[0].split()[1]
    reply = "a b c d e f g h i j k l"  # twelve deltas, 400 ms apart: about five seconds
    term.type(reply)
    term.keys("Enter")
    await term.wait_line("[status running]")
    term.type("half typed")
    # Mid-reply: the streamed part of the line stands above the input, which keeps the text.
    screen = await term.wait_for(
        lambda s: s[-1] == "you> half typed" and s[-2].startswith("slow> a")
    )
    assert "[status idle]" not in screen
    assert reply.startswith(screen[-2].removeprefix("slow> ").rstrip())
    after = ["[status running]", f"slow> {reply}", "[status idle]", "you> half typed"]
    await term.wait_for(lambda s: s[-4:] == after)
    term.type(" then sent")
    term.keys("Enter")
    await term.wait_line("slow> half typed then sent")
    await term.wait_for(lambda s: s[1:3] == [f"you> {reply}", "[status running]"])
    assert await user_messages(server.url, session_id) == [reply, "half typed then sent"]


async def test_arrow_keys_edit_the_line_and_up_recalls_it(
    server: Server, terminal: StartTerminal
) -> None:
    term = terminal()
    screen = await term.prompt()
    session_id = screen[0].split()[1]
    term.type("abc")
    term.keys("Left", "Left")
    term.type("X")
    term.keys("Enter")
    await term.wait_line("echo> aXbc")
    term.type("second")
    term.keys("Enter")
    await term.wait_line("echo> second")
    await term.prompt()
    term.keys("Up", "Up")  # back through the history to the first line
    await term.prompt("aXbc")
    term.keys("End")
    term.type("!")
    term.keys("Enter")
    await term.wait_line("echo> aXbc!")
    term.type("/qiut")  # a typo: refused where it is typed, never sent
    term.keys("Enter")
    await term.wait_for(lambda s: any(line.startswith("[unknown command /qiut;") for line in s))
    term.type("//tool ls {}")
    term.keys("Enter")
    await term.wait_for(lambda s: any(line.startswith("[approval apr_") for line in s))
    term.type("/approve")
    term.keys("Enter")
    await term.wait_line("echo> tool ls approved")
    # Nothing more to print: the input line is drawn again, empty
    await term.wait_for(lambda s: s[-3:] == ["echo> tool ls approved", "[status idle]", "you>"])
    term.keys("C-d")  # end of input: leaves, exit status 0
    assert await term.exit_status() == 0
    assert await user_messages(server.url, session_id) == [
        "aXbc",
        "second",
        "aXbc!",
        "/tool ls {}",
    ]


async def test_escape_sequences_from_the_wire_are_shown_not_obeyed(
    server: Server, terminal: StartTerminal
) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={})
    messages = f"/api/v1/sessions/{session['id']}/messages?wait=true"
    await rest(server.url, "POST", messages, json={"content": "earlier line"})
    term = terminal(session["id"])
    await term.wait_line("echo> earlier line")
    await term.prompt()
    title = term.show("pane_title")
    hostile = "\x1b[2J\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\rfake\u202etxt\x9b1m"
    await rest(server.url, "POST", messages, json={"content": hostile + "\n[approval apr_x ok]"})
    # (the reply's status notices may come before, between or after its lines)
    expected = [
        f"session {session['id']} (agent echo, idle, 2 messages)",
        "you> earlier line",
        "echo> earlier line",
        f"you> {SHOWN}",
        "you> [approval apr_x ok]",
        f"echo> {SHOWN}",
        "echo> [approval apr_x ok]",
        "you>",
    ]
    await term.wait_for(
        lambda s: [line for line in s if not line.startswith("[status ")] == expected
    )
    assert term.show("pane_title") == title != "owned"
    assert term.tmux("list-buffers") == ""  # no clipboard write reached the terminal

"""The installed ``aiosvc tui`` in a real terminal (tmux): keys typed with ``send-keys``, the
screen read back with ``capture-pane``, against a real installed ``aiosvc serve``."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import installed, test_tui
from tests.serving import Server, rest

TIMEOUT = 30.0
server = test_tui.server  # a real server with a slow echo agent beside the default one
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Pane:
    """One tmux session of its own (its own server socket) running one command."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.name = "tui"
        self.env: dict[str, str] | None = None

    def tmux(self, *args: str, check: bool = True) -> str:
        """Run a tmux command on this pane's server; its output."""
        argv = ["tmux", "-S", str(self.socket), *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=check, env=self.env)
        return done.stdout

    def start(self, argv: list[str], env: dict[str, str], width: int = 140) -> None:
        """Start ``argv`` in a detached session of ``width`` x 40 cells, in ``env`` (the tmux
        server, started here, hands its environment to the command)."""
        self.env = env | {"TERM": "xterm-256color"}
        self.tmux(
            "new-session", "-d", "-s", self.name, "-x", str(width), "-y", "40", shlex.join(argv)
        )

    def running(self) -> bool:
        """Tell whether the command still runs (its session ends with it)."""
        argv = ["tmux", "-S", str(self.socket), "has-session", "-t", self.name]
        return subprocess.run(argv, capture_output=True, env=self.env).returncode == 0

    async def keys(self, *keys: str) -> None:
        """Type keys (tmux key names, or literal text with ``-l``), then pause as a person
        would: keys sent in one burst can reach Textual's input line out of order."""
        self.tmux("send-keys", "-t", self.name, *keys)
        await asyncio.sleep(0.2)

    def screen(self) -> str:
        """The text on the screen now."""
        return self.tmux("capture-pane", "-p", "-t", self.name)

    async def wait_for(self, check: Callable[[str], bool], what: str) -> str:
        """Read the screen until ``check(screen)``; return that screen."""
        screen = ""
        try:
            async with asyncio.timeout(TIMEOUT):
                while not check(screen := self.screen()):
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pytest.fail(f"the screen never showed {what}:\n{screen}")
        return screen

    def close(self) -> None:
        """End the tmux server and everything in it."""
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    """A tmux server of the test's own (a short socket path: sockets have a length limit)."""
    running = Pane(Path("/tmp") / f"aiosvc-tui-{uuid.uuid4().hex[:12]}.sock")
    try:
        yield running
    finally:
        running.close()
        running.socket.unlink(missing_ok=True)


async def test_the_installed_tui_shows_the_session_and_its_reply_in_a_terminal(
    server: Server, pane: Pane
) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={"title": "in tmux"})
    env = installed.environ(AIOSVC_URL=server.url)
    pane.start(installed.argv("tui", session["id"]), env)
    screen = await pane.wait_for(lambda s: "● connected" in s, "the connection")
    assert f'{session["id"]} "in tmux" (echo, idle)' in screen
    assert "in tmux" in screen.splitlines()[2]  # the session list's first row
    await pane.keys("-l", "hello from a real terminl")
    await pane.keys("Left")
    await pane.keys("-l", "a")  # the arrow moves in the line: nothing is sent until Enter
    await pane.keys("Up")  # no line sent before: the line stays as it is
    await pane.keys("Enter")
    screen = await pane.wait_for(lambda s: "agent: hello from a real terminal" in s, "the reply")
    assert "you: hello from a real terminal" in screen
    # untrusted text from elsewhere is shown escaped and the earlier lines stay
    path = f"/api/v1/sessions/{session['id']}/messages"
    await rest(server.url, "POST", path, json={"content": "\x1b[2J[approval apr_x approved]"})
    await pane.wait_for(
        lambda s: (
            "agent: \\x1b[2J[approval apr_x approved]" in s
            and "you: hello from a real terminal" in s
        ),
        "the escaped reply below the earlier lines",
    )
    history = await rest(server.url, "GET", path)
    assert history[0]["content"] == "hello from a real terminal"
    await pane.keys("C-q")
    async with asyncio.timeout(TIMEOUT):
        while pane.running():
            await asyncio.sleep(0.1)

"""``aiosvc tui`` driven through Textual's own harness (``run_test`` and ``Pilot``), as a
person would drive it, against a real installed ``aiosvc serve``: the live session list,
session keys, sending and streaming, approvals, escaped wire text, and a daemon restart."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from textual.pilot import Pilot
from textual.widget import Widget

from aiosvc.client.tui.app import TuiApp
from aiosvc.client.tui.dialogs import ConfirmDialog, NewSessionDialog, RenameDialog
from aiosvc.client.tui.panels import PromptInput
from tests.serving import Server, rest, serving

#: Bound on every wait for the screen to show something.
TIMEOUT = 20.0
SERVER_CONFIG = (
    '[agents.slow]\nkind = "echo"\ndelay_ms = 150\n\n'
    '[agents.glacial]\nkind = "echo"\ndelay_ms = 2000\n'
)
SIZE = (140, 40)


@pytest.fixture
async def server(db_path: Path) -> AsyncIterator[Server]:
    """A real ``aiosvc serve`` with a slow echo agent beside the default one."""
    async with serving(db_path, SERVER_CONFIG) as running:
        yield running


async def until(pilot: Pilot[None], check: Callable[[], object], what: str) -> None:
    """Let the app run until ``check()`` is true."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while not check():
                await pilot.pause(0.02)
    except TimeoutError:
        pytest.fail(f"the screen never showed {what}; conversation: {entries(pilot.app)}")


def entries(app: object) -> list[tuple[str, str]]:
    """The conversation as shown: (label, text) per entry."""
    assert isinstance(app, TuiApp)
    return [(e.label, e.render().plain.removeprefix(f"{e.label}: ")) for e in app.view.entries]


def view_lines(app: TuiApp) -> list[str]:
    """The conversation's lines as drawn (all of them, not only those on screen)."""
    return [line.text.rstrip() for line in app.view.lines]


def screenshot(app: TuiApp) -> str:
    """The screen as an SVG's text (spaces as they are)."""
    return app.export_screenshot().replace("&#160;", " ")


def rows(app: TuiApp) -> list[list[str]]:
    """The session list as shown, row by row."""
    table = app.table
    return [[cell.plain for cell in table.get_row_at(i)] for i in range(table.row_count)]


def shown_at_all(widget: Widget) -> bool:
    """Tell whether a widget takes room on the screen."""
    return bool(widget.display)


async def type_line(pilot: Pilot[None], line: str) -> None:
    """Type a line into the focused input and press Enter."""
    await pilot.press(*line)
    await pilot.press("enter")


# ---- the session list


async def test_the_session_list_follows_the_daemon_live(server: Server) -> None:
    app = TuiApp(server.url, None)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status_bar.state == "connected", "connected")
        assert rows(app) == []
        first = await rest(server.url, "POST", "/api/v1/sessions", json={"title": "first"})
        await until(pilot, lambda: len(rows(app)) == 1, "the new session")
        assert rows(app) == [["first", "idle", "echo", first["computer"]]]
        second = await rest(server.url, "POST", "/api/v1/sessions", json={"agent": "slow"})
        await until(pilot, lambda: len(rows(app)) == 2, "the second session")
        assert rows(app)[0] == [second["id"], "idle", "slow", second["computer"]]  # newest first
        path = f"/api/v1/sessions/{second['id']}"
        await rest(server.url, "POST", path + "/messages", json={"content": "a b c d"})
        await until(pilot, lambda: rows(app)[0][1] == "running", "the status running")
        await until(pilot, lambda: rows(app)[0][1] == "idle", "the status idle again")
        await rest(server.url, "PATCH", path, json={"title": "renamed"})
        await until(pilot, lambda: rows(app)[0][0] == "renamed", "the new title")
        await rest(server.url, "POST", path + "/end")
        await until(pilot, lambda: rows(app)[0][1] == "ended", "the session ended")
        await rest(server.url, "DELETE", path)
        await until(pilot, lambda: len(rows(app)) == 1, "the session gone")
        assert rows(app)[0][0] == "first"


async def test_sessions_are_created_renamed_ended_and_deleted_with_keys(server: Server) -> None:
    app = TuiApp(server.url, None)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status_bar.state == "connected", "connected")
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, NewSessionDialog), "the dialog")
        await type_line(pilot, "made here")  # the title; Enter goes on to the agents
        await pilot.press("down", "down", "enter")  # echo (the default), glacial, slow
        await until(pilot, lambda: app.session_id != "", "the new session open")
        session = await rest(server.url, "GET", f"/api/v1/sessions/{app.session_id}")
        assert (session["title"], session["agent"]) == ("made here", "slow")
        await until(
            pilot,
            lambda: rows(app) == [["made here", "idle", "slow", session["computer"]]],
            "the row",
        )
        assert app.status_bar.session is not None and app.status_bar.session["id"] == session["id"]

        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, RenameDialog), "the rename dialog")
        await pilot.press("ctrl+u")  # the title is there to edit: clear it
        await type_line(pilot, "better name")
        path = f"/api/v1/sessions/{session['id']}"
        await until(pilot, lambda: rows(app)[0][0] == "better name", "the new title")
        assert (await rest(server.url, "GET", path))["title"] == "better name"

        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await until(pilot, lambda: rows(app)[0][1] == "ended", "the session ended")
        assert (await rest(server.url, "GET", path))["status"] == "ended"

        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("n")  # no: nothing happens
        await pilot.pause(0.3)
        assert len(rows(app)) == 1
        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await until(pilot, lambda: rows(app) == [], "the session deleted")
        async with aiohttp.ClientSession() as http, http.get(server.url + path) as response:
            assert response.status == 404
        assert app.session_id == ""


# ---- the conversation


async def test_a_message_is_sent_with_enter_and_its_reply_streams_in(server: Server) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={"agent": "slow"})
    app = TuiApp(server.url, None, session["id"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status_bar.state == "connected", "connected")
        await type_line(pilot, "one two three four five six seven eight")
        assert ("you", "one two three four five six seven eight") in entries(app)
        seen: list[str] = []

        def reply() -> str:
            texts = [text for label, text in entries(app) if label == "agent"]
            if texts and (not seen or seen[-1] != texts[-1]):
                seen.append(texts[-1])
            return texts[-1] if texts else ""

        await until(pilot, lambda: reply() == "one two three four five six seven eight", "it")
        assert len(seen) > 2, f"the reply came whole, not streamed: {seen}"
        assert all("one two three four five six seven eight".startswith(s) for s in seen)
        prompt = app.query_one(PromptInput)
        assert prompt.has_focus and prompt.value == ""
        drawn = [
            "you: one two three four five six seven eight",
            "agent: one two three four five six seven eight",
        ]
        await until(pilot, lambda: view_lines(app) == drawn, "the two lines drawn")

        # a slash word that is no command is refused here, // sends one slash
        await type_line(pilot, "/qiut")
        await until(pilot, lambda: entries(app)[-1][1].startswith("[unknown command /qiut"), "it")
        await type_line(pilot, "//not a command")
        await until(pilot, lambda: reply() == "/not a command", "the echo of the // line")
        await until(pilot, lambda: view_lines(app)[-1] == "agent: /not a command", "it drawn")
        assert view_lines(app)[:2] == drawn  # the earlier lines stay
        assert "[unknown command /qiut" in "\n".join(view_lines(app))
        history = await rest(server.url, "GET", f"/api/v1/sessions/{session['id']}/messages")
        assert [m["content"] for m in history if m["role"] == "user"][-1] == "/not a command"
        assert "/qiut" not in [m["content"] for m in history]


async def test_escape_cancels_the_running_reply(server: Server) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={"agent": "glacial"})
    app = TuiApp(server.url, None, session["id"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status_bar.state == "connected", "connected")
        await type_line(pilot, "a long reply that will be cut short before its end")
        await until(pilot, lambda: len(entries(app)) == 2, "the reply starting")
        assert entries(app)[1][0] == "agent"
        await pilot.press("escape")
        await until(pilot, lambda: ("", "[cancelled]") in entries(app), "the cancellation")
        history = await rest(server.url, "GET", f"/api/v1/sessions/{session['id']}/messages")
        assert history[-1]["status"] == "cancelled"
        assert history[-1]["content"] == entries(app)[1][1]  # what streamed, and no more


async def test_older_messages_load_a_page_at_a_time(server: Server) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={})
    path = f"/api/v1/sessions/{session['id']}/messages"
    for number in range(40):
        await rest(server.url, "POST", path + "?wait=true", json={"content": f"m{number}"})
    app = TuiApp(server.url, None, session["id"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(entries(app)) == 50, "the last 50 messages")
        assert entries(app)[0] == ("user", "m15") and entries(app)[-1] == ("agent", "m39")
        await pilot.press("pageup")
        while entries(app)[0] != ("user", "m0"):
            await pilot.press("pageup")
            await pilot.pause(0.05)
        assert len(entries(app)) == 80
        await until(pilot, lambda: len(view_lines(app)) == 80, "every line drawn")
        assert view_lines(app)[:3] == ["user: m0", "agent: m0", "user: m1"]
        assert view_lines(app)[-1] == "agent: m39"
        assert [text for _, text in entries(app)[:4]] == ["m0", "m0", "m1", "m1"]


# ---- approvals


async def test_an_approval_is_shown_and_approved_with_one_key(server: Server) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={})
    app = TuiApp(server.url, None, session["id"])
    async with (
        app.run_test(size=SIZE) as pilot,
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url.replace("http", "ws") + "/api/v1/ws") as other,
    ):
        await other.receive_json()  # hello
        await other.send_json({"op": "subscribe", "topics": ["approvals"], "id": 1})
        assert (await other.receive_json())["type"] == "ack"
        await until(pilot, lambda: app.status_bar.state == "connected", "connected")
        await type_line(pilot, '//tool shell {"cmd": "ls"}')
        await until(pilot, lambda: app.approvals.pending, "the approval")
        approval_id = next(iter(app.approvals.pending))
        shown = str(app.approvals.render())
        assert approval_id in shown and 'tool shell input {"cmd": "ls"}' in shown
        assert shown_at_all(app.approvals)  # in plain sight above the conversation
        assert ("tool", 'shell {"cmd": "ls"}') in entries(app)

        await pilot.press("ctrl+y")
        await until(pilot, lambda: not app.approvals.pending, "the approval gone")
        assert not shown_at_all(app.approvals)
        requested = (await other.receive_json())["event"]
        resolved = (await other.receive_json())["event"]
        assert (requested["type"], requested["data"]["id"]) == ("approval.requested", approval_id)
        assert resolved["type"] == "approval.resolved"
        assert (resolved["data"]["id"], resolved["data"]["status"]) == (approval_id, "approved")
        await until(pilot, lambda: ("agent", "tool shell approved") in entries(app), "the reply")

        # decided elsewhere: it disappears here too
        await type_line(pilot, '//tool rm {"path": "/"}')
        await until(pilot, lambda: app.approvals.pending, "the second approval")
        second = next(iter(app.approvals.pending))
        await rest(server.url, "POST", f"/api/v1/approvals/{second}", json={"decision": "deny"})
        await until(pilot, lambda: not app.approvals.pending, "the approval gone")
        await until(pilot, lambda: ("agent", "tool rm denied") in entries(app), "the reply")


# ---- untrusted text


async def test_escape_sequences_and_markup_from_the_wire_are_shown_escaped(server: Server) -> None:
    title = "[bold red]t[/] \x1b]0;owned\x07"
    session = await rest(server.url, "POST", "/api/v1/sessions", json={"title": title})
    app = TuiApp(server.url, None, session["id"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status_bar.state == "connected", "connected")
        content = "\x1b[2J[approval apr_x approved]\n\x1b]52;c;aGk=\x07 [b]x[/b] \u202eevil"
        path = f"/api/v1/sessions/{session['id']}/messages"
        await rest(server.url, "POST", path, json={"content": content})
        escaped = "\\x1b[2J[approval apr_x approved]\n\\x1b]52;c;aGk=\\x07 [b]x[/b] \\u202eevil"
        await until(pilot, lambda: ("agent", escaped) in entries(app), "the escaped reply")
        assert ("user", escaped) in entries(app)
        assert rows(app)[0][0] == "[bold red]t[/] \\x1b]0;owned\\x07"
        assert not app.approvals.pending and not shown_at_all(app.approvals)  # nothing spoofed
        assert "\x1b" not in "".join(text for _, text in entries(app))
        await until(
            pilot,
            lambda: "\\x1b[2J[approval apr_x approved]" in screenshot(app),
            "the escaped text drawn",
        )


# ---- resilience


async def test_a_daemon_restart_is_resynchronised_then_live_again(db_path: Path) -> None:
    config = db_path.with_name("aiosvc.toml")
    config.write_text(SERVER_CONFIG)
    first = Server(db_path, config=config)
    await first.start()
    second: Server | None = None
    try:
        session = await rest(first.url, "POST", "/api/v1/sessions", json={"title": "kept"})
        app = TuiApp(first.url, None, session["id"])
        states: list[str] = []
        shown = app.connection

        def record(state: str, detail: str = "") -> None:
            if not states or states[-1] != state:
                states.append(state)
            shown(state, detail)

        app.connection = record  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.status_bar.state == "connected", "connected")
            await type_line(pilot, "before")
            await until(pilot, lambda: ("agent", "before") in entries(app), "the reply")
            await first.stop(signal.SIGTERM)
            await until(pilot, lambda: app.status_bar.state == "reconnecting", "reconnecting")
            await type_line(pilot, "typed while down")  # kept until the daemon is back
            second = Server(db_path, port=first.port, config=config)
            await second.start()
            await until(pilot, lambda: ("agent", "typed while down") in entries(app), "it")
            assert states[-2:] == ["resynchronising", "connected"], states
            assert states[:3] == ["connecting", "connected", "reconnecting"], states
            await rest(
                second.url, "PATCH", f"/api/v1/sessions/{session['id']}", json={"title": "live"}
            )
            await until(pilot, lambda: rows(app)[0][0] == "live", "the rename, live")
            path = f"/api/v1/sessions/{session['id']}/messages"
            await rest(second.url, "POST", path, json={"content": "from elsewhere"})
            await until(pilot, lambda: ("agent", "from elsewhere") in entries(app), "it")
            texts = [text for _, text in entries(app) if not text.startswith("[")]
            assert texts == [
                "before",
                "before",
                "typed while down",
                "typed while down",
                "from elsewhere",
                "from elsewhere",
            ]
    finally:
        if second is not None:
            await second.stop()
        elif first.process is not None and first.process.poll() is None:
            await first.stop()

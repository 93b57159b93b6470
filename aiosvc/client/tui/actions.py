"""What the session keys do: create (choosing the agent), rename, end and delete."""

from __future__ import annotations

from typing import Protocol, TypeVar

from rich.text import Text
from textual.screen import ModalScreen

from aiosvc.client.api import Api, ApiError, Unreachable
from aiosvc.client.tui.dialogs import ConfirmDialog, NewSessionDialog, RenameDialog
from aiosvc.client.tui.panels import SessionTable, safe

T = TypeVar("T")


class Host(Protocol):
    """What the actions need of the application."""

    api: Api

    @property
    def table(self) -> SessionTable:
        """The session list."""

    @property
    def session_id(self) -> str:
        """The open session ("" when none)."""

    async def ask(self, dialog: ModalScreen[T]) -> T:
        """Show a dialog; its answer."""

    async def open_session(self, session_id: str) -> None:
        """Show a session."""

    def focus_prompt(self) -> None:
        """Put the keyboard in the input line."""

    def fail(self, message: str) -> None:
        """Tell of a failed action."""


def target(app: Host) -> str | None:
    """The session a key acts on: the open one, else the one under the list's cursor."""
    return app.session_id or app.table.selected()


async def new_session(app: Host) -> None:
    """Ask for the agent and a title, create the session and open it."""
    try:
        agents = (await app.api.call("GET", "/api/v1/agents", params={"limit": "500"}))["data"]
    except (ApiError, Unreachable) as exc:
        app.fail(f"cannot list the agents: {exc}")
        return
    answer = await app.ask(NewSessionDialog(agents))
    if answer is None:
        return
    try:
        session = await app.api.create_session(answer.agent, answer.title or None)
    except (ApiError, Unreachable) as exc:
        app.fail(f"cannot create the session: {exc}")
        return
    app.table.upsert(session)
    await app.open_session(str(session["id"]))
    app.focus_prompt()


async def rename(app: Host) -> None:
    """Ask for a new title and set it."""
    session_id = target(app)
    if session_id is None:
        app.fail("no session to rename")
        return
    title = str(app.table.sessions.get(session_id, {}).get("title") or "")
    answer = await app.ask(RenameDialog(title))
    if answer is None:
        return
    try:
        path = app.api.session_path(session_id)
        session = (await app.api.call("PATCH", path, body={"title": answer}))["data"]
    except (ApiError, Unreachable) as exc:
        app.fail(f"cannot rename the session: {exc}")
        return
    app.table.upsert(session)


async def end_or_delete(app: Host, what: str) -> None:
    """End or delete a session once the user says yes."""
    session_id = target(app)
    if session_id is None:
        app.fail(f"no session to {what}")
        return
    session = app.table.sessions.get(session_id, {})
    question = Text(f"{what.capitalize()} session ")
    question.append_text(safe(session.get("title") or session_id))
    question.append(
        "? It takes no more messages." if what == "end" else "? Its history goes with it."
    )
    if not await app.ask(ConfirmDialog(question)):
        return
    path = app.api.session_path(session_id)
    try:
        if what == "end":
            app.table.upsert((await app.api.call("POST", path + "/end"))["data"])
        else:
            await app.api.call("DELETE", path)
    except (ApiError, Unreachable) as exc:
        app.fail(f"cannot {what} the session: {exc}")

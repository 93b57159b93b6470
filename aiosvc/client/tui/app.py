"""The full-screen application: the session list, the conversation, approvals, the input."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import aiohttp
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label

from aiosvc.client import slash
from aiosvc.client.api import Api, ApiError, Unreachable
from aiosvc.client.display import terminal_safe
from aiosvc.client.link import Fatal
from aiosvc.client.pending import PendingOps
from aiosvc.client.tui import actions
from aiosvc.client.tui.conversation import (
    Conversation,
    ConversationDisplay,
    TuiTranscript,
    message_entry,
)
from aiosvc.client.tui.feed import CONNECTED, Feed, about_session
from aiosvc.client.tui.panels import ApprovalPanel, PromptInput, SessionTable, StatusBar

T = TypeVar("T")
COMMANDS = {
    "/help": ("", "list the commands and keys"),
    "/approve": ("[ID]", "approve the first pending approval (or ID); key ctrl+y"),
    "/deny": ("[ID]", "deny the first pending approval (or ID); key ctrl+n"),
    "/cancel": ("", "stop the running reply; key escape"),
    "/quit": ("", "leave; key ctrl+q"),
}
KEYS = (
    "keys: F2 new session, F3 rename, F4 end, F8 delete, tab moves between the list, "
    "the conversation and the input, PageUp shows older messages"
)


class TuiApp(App[None]):
    """``aiosvc tui``: every session of one daemon, live, over one WebSocket."""

    TITLE = "aiosvc"
    CSS = """
    #left { width: 46; border-right: solid $primary; }
    #left > Label { padding: 0 1; text-style: bold; }
    #sessions { height: 1fr; }
    #right { width: 1fr; }
    #prompt { dock: bottom; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+y", "decide('approve')", "Approve", priority=True),
        Binding("ctrl+n", "decide('deny')", "Deny", priority=True),
        Binding("escape", "cancel_reply", "Cancel reply"),
        Binding("f2", "new_session", "New"),
        Binding("f3", "rename", "Rename"),
        Binding("f4", "end", "End"),
        Binding("f8", "delete", "Delete"),
        Binding("pageup", "older", "Older", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, url: str, api_key: str | None, session: str | None = None) -> None:
        super().__init__()
        self.daemon_url = url
        self.api_key = api_key
        self.initial = session
        self.outbox = PendingOps()
        self.failure: str | None = None  # why the app gave up, for the command to print
        self.oldest: str | None = None  # the open session's oldest message shown
        self.http: aiohttp.ClientSession | None = None

    def compose(self) -> ComposeResult:
        """Lay out the panes."""
        with Horizontal():
            with Vertical(id="left"):
                yield Label("Sessions (Enter opens)")
                yield SessionTable(id="sessions")
            with Vertical(id="right"):
                yield ApprovalPanel(id="approvals")
                yield Conversation(id="conversation")
                yield PromptInput(id="prompt")
        yield StatusBar(self.daemon_url, id="status")
        yield Footer()

    @property
    def table(self) -> SessionTable:
        """The session list."""
        return self.query_one(SessionTable)

    @property
    def approvals(self) -> ApprovalPanel:
        """The pending approvals."""
        return self.query_one(ApprovalPanel)

    @property
    def view(self) -> Conversation:
        """The conversation pane."""
        return self.query_one(Conversation)

    @property
    def status_bar(self) -> StatusBar:
        """The status bar."""
        return self.query_one(StatusBar)

    @property
    def session_id(self) -> str:
        """The open session ("" when none)."""
        return self.feed.session_id

    async def on_mount(self) -> None:
        """Connect, and open the session asked for."""
        self.http = aiohttp.ClientSession()
        self.api = Api(self.http, self.daemon_url, self.api_key)
        self.display_ = ConversationDisplay(self.view)
        self.transcript = self._transcript(self.display_, None)
        self.feed = Feed(self.api, self.transcript, self.outbox, self.display_, self)
        self.view.load_older = self._load_older
        self.status_bar.show()
        if self.initial is not None:
            self.feed.session_id = self.initial
            self.query_one(PromptInput).focus()
        else:
            self.table.focus()
        self.run_worker(self._run_feed(), name="feed")

    async def on_unmount(self) -> None:
        """Close the connections."""
        feed = getattr(self, "feed", None)  # (absent if mounting failed early)
        if isinstance(feed, Feed):
            feed.closing = True
        if self.http is not None:
            await self.http.close()

    async def _run_feed(self) -> None:
        try:
            await self.feed.run()
        except Fatal as exc:
            self.failure = str(exc)
            self.exit(return_code=1)

    def _transcript(self, display: ConversationDisplay, status: str | None) -> TuiTranscript:
        return TuiTranscript(display, self.outbox, status=status, on_status=self._on_status)

    # What the feed tells ------------------------------------------------------------------------

    def connection(self, state: str, detail: str = "") -> None:
        """Show the connection's state in the status bar."""
        self.status_bar.state = state
        self.status_bar.detail = detail
        self.status_bar.show()

    async def resync(self) -> None:
        """Read the session list, the pending approvals and the open session's history."""
        sessions = await self.api.call("GET", "/api/v1/sessions", params={"limit": "500"})
        params = {"status": "pending", "limit": "500"}
        approvals = await self.api.call("GET", "/api/v1/approvals", params=params)
        self.table.replace(sessions["data"])
        titles = {key: str(s.get("title") or "") for key, s in self.table.sessions.items()}
        self.approvals.titles = titles
        self.approvals.replace(approvals["data"])
        if self.session_id:
            await self._load_history()

    def feed_event(self, event: dict[str, Any]) -> None:
        """Keep the session list, the approvals and the status bar as the events say."""
        kind = event.get("type")
        data = event.get("data")
        if not isinstance(data, dict):
            return
        if kind in ("session.created", "session.updated", "session.ended") and "id" in data:
            self.table.upsert(data)
            self.approvals.titles[str(data["id"])] = str(data.get("title") or "")
            if data["id"] == self.session_id:
                self.status_bar.session = data
                self.status_bar.show()
        elif kind == "session.deleted":
            deleted = str(data.get("id"))
            self.table.forget(deleted)
            self.approvals.forget_session(deleted)
            if deleted == self.session_id:
                self.run_worker(self._deleted(deleted))
        elif kind == "approval.requested":
            self.approvals.add(data)
        elif kind == "approval.resolved":
            self.approvals.resolve(str(data.get("id")))
        elif kind == "status" and isinstance(data.get("status"), str):
            self.table.set_status(about_session(event) or "", data["status"])

    async def _deleted(self, session_id: str) -> None:
        await self.open_session("")
        self.display_.notice(f"session {session_id} was deleted")

    def _on_status(self, status: str) -> None:
        if self.status_bar.session is not None:
            self.status_bar.session = {**self.status_bar.session, "status": status}
            self.status_bar.show()

    # The open session ---------------------------------------------------------------------------

    async def open_session(self, session_id: str) -> None:
        """Show another session (or none): its history, then its events."""
        self.view.clear()
        self.display_ = ConversationDisplay(self.view)
        session = self.table.sessions.get(session_id)
        status = str(session.get("status")) if session else None
        self.transcript = self._transcript(self.display_, status)
        self.oldest = None
        self.status_bar.session = session
        self.status_bar.show()
        await self.feed.switch(session_id, self.transcript, self.display_)
        if session_id and self.status_bar.state == CONNECTED:
            try:
                await self._load_history()
            except (ApiError, Unreachable) as exc:
                self.display_.notice(f"cannot read the history: {exc}")

    async def _load_history(self) -> None:
        session_id, transcript = self.session_id, self.transcript
        try:
            session = await self.api.session(session_id)
            messages = await self.api.recent_messages(session_id, 50)
        except ApiError as exc:
            if exc.status != 404:
                raise
            if session_id == self.session_id:
                self.display_.notice(f"session '{session_id}' no longer exists")
                self.status_bar.session = None
                self.status_bar.show()
                await self.feed.switch("", self.transcript, self.display_)
            return
        if session_id != self.session_id:
            return  # another session was opened meanwhile
        if not transcript.shown and messages:
            self.oldest = str(messages[0]["id"])
        self.status_bar.session = session
        self.status_bar.show()
        pending = [a for a in self.approvals.pending.values() if a.get("session_id") == session_id]
        transcript.show_history(messages, pending)

    async def _load_older(self) -> None:
        session_id, before = self.session_id, self.oldest
        if not session_id or before is None:
            return
        path = self.api.session_path(session_id) + "/messages"
        try:
            page = await self.api.call("GET", path, params={"limit": "50", "before": before})
        except (ApiError, Unreachable) as exc:
            self.display_.notice(f"cannot read older messages: {exc}")
            return
        if session_id != self.session_id:
            return
        messages: list[dict[str, Any]] = page["data"]
        self.oldest = str(messages[0]["id"]) if messages and page.get("prev") else None
        fresh = [m for m in messages if str(m.get("id")) not in self.transcript.shown]
        self.transcript.shown.update(str(m.get("id")) for m in fresh)
        self.view.prepend([message_entry(m) for m in fresh])

    # Typing -------------------------------------------------------------------------------------

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        """Send a line, or run its command."""
        prompt = self.query_one(PromptInput)
        line = event.value
        prompt.value = ""
        prompt.remember(line)
        parsed = slash.parse(line, COMMANDS)
        if isinstance(parsed, slash.Refused):
            self.display_.notice(parsed.message)
        elif isinstance(parsed, slash.Command):
            await self._command(parsed)
        elif isinstance(parsed, slash.Send):
            if not self.session_id:
                self.display_.notice("no session open: choose one in the list, or F2 for a new one")
                return
            self.display_.mine(parsed.text)
            self.outbox.add("send_message", session_id=self.session_id, content=parsed.text)
            await self.feed.flush()

    async def _command(self, command: slash.Command) -> None:
        if command.name == "/help":
            for line in [*slash.help_lines(COMMANDS), KEYS]:
                self.view.add("", line, "notice")
        elif command.name == "/quit":
            self.exit()
        elif command.name == "/cancel":
            await self.action_cancel_reply()
        elif len(command.args) > 1:
            self.display_.notice(f"usage: {command.name} [APPROVAL_ID]")
        else:
            decision = "approve" if command.name == "/approve" else "deny"
            await self.action_decide(decision, *command.args)

    # Keys ---------------------------------------------------------------------------------------

    async def action_decide(self, decision: str, approval_id: str | None = None) -> None:
        """Approve or deny the open session's first pending approval (or any, or ``ID``)."""
        if isinstance(self.screen, ModalScreen):
            return
        approval_id = approval_id or self.approvals.first(self.session_id)
        if approval_id is None:
            self.display_.notice("no pending approval")
            return
        self.outbox.add("approve", approval_id=approval_id, decision=decision)
        await self.feed.flush()

    async def action_cancel_reply(self) -> None:
        """Stop the open session's running reply."""
        if self.session_id:
            self.outbox.add("cancel", session_id=self.session_id)
            await self.feed.flush()

    def action_older(self) -> None:
        """Scroll up a page; at the top, show older messages."""
        if self.view.scroll_y <= 0:
            self.view.older()
        else:
            self.view.scroll_page_up(animate=False)

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a session opens it."""
        if event.row_key.value is not None:
            await self.open_session(event.row_key.value)
            self.query_one(PromptInput).focus()

    @work(group="dialogs")
    async def action_new_session(self) -> None:
        """Choose an agent and create a session, then open it."""
        await actions.new_session(self)

    @work(group="dialogs")
    async def action_rename(self) -> None:
        """Rename the open session (or the one under the cursor)."""
        await actions.rename(self)

    @work(group="dialogs")
    async def action_end(self) -> None:
        """End the open session (or the one under the cursor), once confirmed."""
        await actions.end_or_delete(self, "end")

    @work(group="dialogs")
    async def action_delete(self) -> None:
        """Delete the open session (or the one under the cursor), once confirmed."""
        await actions.end_or_delete(self, "delete")

    async def ask(self, dialog: ModalScreen[T]) -> T:
        """Show a dialog and wait for its answer (in a worker)."""
        return await self.push_screen_wait(dialog)

    def focus_prompt(self) -> None:
        """Put the keyboard in the input line."""
        self.query_one(PromptInput).focus()

    def fail(self, message: str) -> None:
        """Tell of a failed action in a notification (the text escaped, never markup)."""
        self.notify(terminal_safe(message), severity="error", markup=False)

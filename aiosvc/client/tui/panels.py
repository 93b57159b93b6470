"""The session list, the pending approvals, the status bar and the input line."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from aiosvc.client.display import terminal_safe


def safe(value: object) -> Text:
    """A wire value as one line of plain text: controls escaped, no markup."""
    return Text(terminal_safe(str(value if value is not None else ""), newlines=False))


class SessionTable(DataTable[Text]):
    """Every session, newest first, kept as the events say."""

    COLUMNS = ("session", "status", "agent", "computer")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.sessions: dict[str, dict[str, Any]] = {}

    def on_mount(self) -> None:
        """Lay out the columns."""
        for name in self.COLUMNS:
            self.add_column(name, key=name)

    def replace(self, sessions: list[dict[str, Any]]) -> None:
        """Show exactly these sessions (a fresh read of the list)."""
        self.sessions = {str(s["id"]): s for s in sessions if isinstance(s, dict) and "id" in s}
        self.redraw()

    def upsert(self, session: dict[str, Any]) -> None:
        """Add a session or show its change."""
        self.sessions[str(session["id"])] = session
        self.redraw()

    def forget(self, session_id: str) -> None:
        """Forget a deleted session."""
        if self.sessions.pop(session_id, None) is not None:
            self.redraw()

    def set_status(self, session_id: str, status: str) -> None:
        """A ``status`` event of the open session (its ``session.updated`` follows)."""
        session = self.sessions.get(session_id)
        if session is not None and session.get("status") != status:
            self.upsert({**session, "status": status})

    def redraw(self) -> None:
        """Rebuild the rows, keeping the cursor on the same session."""
        selected = self.selected()
        self.clear()
        ordered = sorted(
            self.sessions.values(), key=lambda s: str(s.get("created_at", "")), reverse=True
        )
        for session in ordered:
            title = session.get("title") or session.get("id")
            self.add_row(
                safe(title),
                safe(session.get("status")),
                safe(session.get("agent")),
                safe(session.get("computer")),
                key=str(session["id"]),
            )
        if selected in self.sessions:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def selected(self) -> str | None:
        """The id of the session under the cursor."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except LookupError:
            return None
        return key.value


class ApprovalPanel(Static):
    """Pending approvals of every session, at the top of the screen, hidden when none."""

    DEFAULT_CSS = """
    ApprovalPanel {
        display: none; height: auto; max-height: 12; padding: 0 1;
        background: $warning 30%; border: heavy $warning;
    }
    ApprovalPanel.pending { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(markup=False, id=id)
        self.pending: dict[str, dict[str, Any]] = {}  # oldest first
        self.titles: dict[str, str] = {}

    def replace(self, approvals: list[dict[str, Any]]) -> None:
        """Show exactly these pending approvals."""
        ordered = sorted(approvals, key=lambda a: str(a.get("created_at", "")))
        self.pending = {str(a["id"]): a for a in ordered if a.get("status") == "pending"}
        self.redraw()

    def add(self, approval: dict[str, Any]) -> None:
        """An approval was requested."""
        if approval.get("status", "pending") == "pending":
            self.pending[str(approval.get("id"))] = approval
            self.redraw()

    def resolve(self, approval_id: str) -> None:
        """An approval was decided (here or anywhere else) or expired."""
        if self.pending.pop(approval_id, None) is not None:
            self.redraw()

    def forget_session(self, session_id: str) -> None:
        """A deleted session's approvals went with it."""
        for approval_id, approval in list(self.pending.items()):
            if approval.get("session_id") == session_id:
                del self.pending[approval_id]
        self.redraw()

    def first(self, session_id: str) -> str | None:
        """The approval one key answers: the open session's oldest, else the oldest."""
        for approval_id, approval in self.pending.items():
            if approval.get("session_id") == session_id:
                return approval_id
        return next(iter(self.pending), None)

    def redraw(self) -> None:
        """Show each pending approval with its session, tool and input."""
        self.set_class(bool(self.pending), "pending")
        text = Text()
        for number, (approval_id, approval) in enumerate(self.pending.items()):
            if number:
                text.append("\n")
            session = str(approval.get("session_id"))
            title = self.titles.get(session) or session
            tool_input = json.dumps(approval.get("input"), ensure_ascii=False)
            text.append("approval ", "bold")
            text.append_text(safe(approval_id))
            text.append(" in ")
            text.append_text(safe(title))
            text.append(": tool ", "bold")
            text.append_text(safe(approval.get("tool")))
            text.append(" input ")
            text.append_text(safe(tool_input))
        if self.pending:
            text.append("\nctrl+y approve · ctrl+n deny (the open session's first)", "italic")
        self.update(text)


class StatusBar(Static):
    """The connection's state, the daemon and the open session."""

    DEFAULT_CSS = "StatusBar { height: 1; background: $panel; padding: 0 1; }"

    def __init__(self, url: str, *, id: str | None = None) -> None:
        super().__init__(markup=False, id=id)
        self.daemon_url = url
        self.state = "connecting"
        self.detail = ""
        self.session: dict[str, Any] | None = None

    def show(self) -> None:
        """Redraw from the fields."""
        style = {"connected": "bold green", "resynchronising": "bold yellow"}.get(
            self.state, "bold red"
        )
        text = Text.assemble(("● " + self.state, style))
        if self.detail and self.state != "connected":
            text.append(" (")
            text.append_text(safe(self.detail))
            text.append(")")
        text.append(" │ ")
        text.append_text(safe(self.daemon_url))
        text.append(" │ ")
        if self.session is None:
            text.append("no session open", "italic")
        else:
            text.append_text(safe(self.session.get("id")))
            title = self.session.get("title")
            if title:
                text.append(" ")
                text.append_text(safe(json.dumps(title, ensure_ascii=False)))
            text.append(" ")
            text.append_text(safe(f"({self.session.get('agent')}, {self.session.get('status')})"))
        self.update(text)


class PromptInput(Input):
    """The input line, with the lines sent before under the up and down keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Previous line", show=False),
        Binding("down", "history(1)", "Next line", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="type a message; /help lists the commands", id=id)
        self.history: list[str] = []
        self._at = 0  # index into history; len(history) is the line being typed
        self._draft = ""

    def remember(self, line: str) -> None:
        """Keep a line sent (not twice in a row)."""
        if line and (not self.history or self.history[-1] != line):
            self.history.append(line)
        self._at = len(self.history)
        self._draft = ""

    def action_history(self, step: int) -> None:
        """Show the previous or next line sent."""
        if not self.history:
            return
        if self._at == len(self.history):
            self._draft = self.value
        self._at = max(0, min(len(self.history), self._at + step))
        self.value = self.history[self._at] if self._at < len(self.history) else self._draft
        self.cursor_position = len(self.value)

"""The conversation pane: who said what, replies as they stream, tool calls and failures.

The line client's :class:`~aiosvc.client.transcript.Transcript` decides what to show (each
message once, across history pages, reconnects and ``reset``); here its output goes to
widgets instead of a terminal's lines. Every text from the wire passes through
:func:`~aiosvc.client.display.terminal_safe` and is shown as a ``rich.text.Text``, never
parsed as markup.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widget import Widget

from aiosvc.client.display import Display, terminal_safe
from aiosvc.client.pending import PendingOps
from aiosvc.client.transcript import Transcript

#: Refreshes of streaming replies per second: thousands of deltas a second are drawn at most
#: this often, so typing stays responsive however fast a reply streams.
FRAME_RATE = 20
LABELS = {
    "you": "bold cyan",
    "user": "bold blue",
    "agent": "bold green",
    "tool": "bold magenta",
    "": "dim",
}


class Entry(Widget):
    """One block of the conversation: a label and its text, which may still grow."""

    DEFAULT_CSS = """
    Entry { height: auto; padding: 0 1; }
    Entry.notice { color: $text-muted; }
    Entry.approval { color: $warning; text-style: bold; }
    Entry.failure { color: $error; }
    """

    def __init__(self, label: str, text: str, *, classes: str = "") -> None:
        super().__init__(classes=classes, markup=False)
        self.label = label
        self.parts = [text]  # already made terminal-safe

    @property
    def text(self) -> str:
        """Everything shown so far, escaped."""
        return "".join(self.parts)

    def append(self, text: str) -> None:
        """Add to the text (drawn at the next frame)."""
        self.parts.append(text)

    def render(self) -> Text:
        """The label, then the text: plain text, no markup is interpreted."""
        body = Text(self.text)
        if not self.label:
            return body
        return Text.assemble((f"{self.label}: ", LABELS.get(self.label, "bold")), body)


class Conversation(VerticalScroll):
    """The entries, newest at the bottom; scrolling to the top loads an older page."""

    DEFAULT_CSS = "Conversation { height: 1fr; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.can_focus = True
        self.dirty: set[Entry] = set()
        #: Loads and shows the page before the oldest entry; set by the app per session.
        self.load_older: Callable[[], Awaitable[None]] | None = None
        self._loading = False

    def on_mount(self) -> None:
        """Stay at the bottom as entries come, until the user scrolls up."""
        self.anchor()
        self.set_interval(1 / FRAME_RATE, self.draw)

    def add(self, label: str, text: str, classes: str = "") -> Entry:
        """Append an entry; ``text`` must already be escaped."""
        entry = Entry(label, text, classes=classes)
        self.mount(entry)
        return entry

    def grow(self, entry: Entry, text: str) -> None:
        """Add escaped ``text`` to ``entry``, drawn with the next frame."""
        entry.append(text)
        self.dirty.add(entry)

    def draw(self) -> None:
        """Redraw the entries that grew since the last frame."""
        if self.dirty:
            for entry in self.dirty:
                entry.refresh(layout=True)
            self.dirty.clear()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """At the top, fetch the page before (older messages)."""
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 and old_value > 0:
            self.older()

    def older(self) -> None:
        """Load the page of history before the oldest entry, once at a time."""
        if self.load_older is not None and not self._loading:
            self._loading = True
            self.run_worker(self._older(self.load_older), group="older")

    async def _older(self, load: Callable[[], Awaitable[None]]) -> None:
        try:
            await load()
        finally:
            self._loading = False

    def prepend(self, entries: list[Entry]) -> None:
        """Put an older page above everything, keeping what was on screen in view."""
        if not entries:
            return
        first = self.children[0] if self.children else None
        self.mount_all(entries, before=0)
        if first is not None:
            self.call_after_refresh(first.scroll_visible, top=True, animate=False)


def message_entry(message: dict[str, Any]) -> Entry:
    """The entry of one message from a history page, as it ended."""
    role = message.get("role")
    content = terminal_safe(str(message.get("content") or ""))
    label = {"user": "user", "tool": "tool", "system": ""}.get(str(role), "agent")
    entry = Entry(label, content)
    error = message.get("error")
    if message.get("status") == "failed" and isinstance(error, dict):
        entry.append(terminal_safe(f"\n[failed: {error.get('code')}: {error.get('message')}]"))
    elif message.get("status") == "cancelled":
        entry.append("\n[cancelled]")
    return entry


class ConversationDisplay(Display):
    """What the transcript shows, as entries of the conversation pane."""

    def __init__(self, view: Conversation) -> None:
        super().__init__(io.StringIO(), color=False)  # nothing is written to a stream
        self.view = view
        self.replies: dict[str, Entry] = {}  # replies still growing, by message id

    def end_line(self) -> None:
        """The open reply is finished: its text is complete."""
        if self.open is not None:
            self.replies.pop(self.open, None)
            self.open = None

    def line(self, text: str) -> None:
        """A line of its own (an approval request, say)."""
        classes = "approval" if text.startswith("[approval ") else ""
        self.view.add("", terminal_safe(text), classes)

    def user(self, text: str) -> None:
        """A user's message typed in another client."""
        self.view.add("user", terminal_safe(text))

    def mine(self, text: str) -> None:
        """A message typed here."""
        self.view.add("you", terminal_safe(text))

    def notice(self, text: str) -> None:
        """A bracketed notice; a failure stands out."""
        classes = "failure" if text.startswith(("failed", "error", "no answer")) else "notice"
        self.view.add("", f"[{terminal_safe(text, newlines=False)}]", classes)

    def stream(self, message_id: str, text: str) -> None:
        """Continue a reply (starting its entry with its first text)."""
        if not text:
            return
        self.open = message_id
        entry = self.replies.get(message_id)
        shown = terminal_safe(text)
        if entry is None:
            label = "agent"
            if shown.startswith("[tool] "):
                label, shown = "tool", shown.removeprefix("[tool] ")
            self.replies[message_id] = self.view.add(label, shown)
        else:
            self.view.grow(entry, shown)


class TuiTranscript(Transcript):
    """The transcript of the open session, with what only the full-screen client shows."""

    def __init__(
        self,
        display: ConversationDisplay,
        outbox: PendingOps,
        *,
        status: str | None,
        on_status: Callable[[str], None],
    ) -> None:
        super().__init__(display, outbox, status=status)
        self.view = display
        self._on_status = on_status

    def on_event(self, event: dict[str, Any]) -> None:
        """Show one event of the open session, tool calls and hooks included."""
        kind = str(event.get("type"))
        data = event.get("data")
        if kind == "tool.use" and isinstance(data, dict):
            tool_input = json.dumps(data.get("input"), ensure_ascii=False)
            self.view.view.add("tool", terminal_safe(f"{data.get('tool')} {tool_input}"), "notice")
        elif kind.startswith("hook."):
            about = json.dumps(data.get("data") if isinstance(data, dict) else None)
            self.display.notice(f"{kind} {about}")
        super().on_event(event)

    def _status(self, status: object) -> None:
        # the status bar and the session list show it: no notice in the conversation
        if isinstance(status, str) and status != self.status:
            self.status = status
            self._on_status(status)

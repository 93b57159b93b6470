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

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from aiosvc.client.display import Display, terminal_safe
from aiosvc.client.pending import PendingOps
from aiosvc.client.transcript import Transcript

#: Refreshes of streaming replies per second: thousands of deltas a second are drawn at most
#: this often, so typing stays responsive however fast a reply streams.
FRAME_RATE = 20
#: A growing reply goes on in a new block at its first line break past this many characters:
#: each frame then wraps the last block only, not the whole reply again.
BLOCK_CHARS = 2000
LABELS = {
    "you": "bold cyan",
    "user": "bold blue",
    "agent": "bold green",
    "tool": "bold magenta",
}
KINDS = {
    "notice": Style(dim=True),
    "approval": Style(color="yellow", bold=True),
    "failure": Style(color="red"),
}


class Entry:
    """One block of the conversation: a label and its text, which may still grow."""

    def __init__(self, label: str, text: str, *, classes: str = "") -> None:
        self.label = label
        self.kind = classes
        self.parts = [text]  # already made terminal-safe
        self.length = len(text)
        self.lines: list[Strip] = []  # wrapped at the view's width
        self.start = 0  # the index of its first line in the view
        # The lines of its text up to ``done`` (a line break): a growing reply's finished
        # paragraphs are wrapped once, only the last one again at each frame.
        self.done = 0
        self.done_lines: list[Strip] = []
        self.width = 0

    @property
    def text(self) -> str:
        """Everything shown so far, escaped."""
        if len(self.parts) > 1:  # joined once for every frame until more comes
            self.parts = ["".join(self.parts)]
        return self.parts[0]

    def append(self, text: str) -> None:
        """Add to the text (drawn at the next frame)."""
        self.parts.append(text)
        self.length += len(text)

    def render(self, start: int = 0, end: int | None = None) -> Text:
        """The label, then the text (or the part from ``start`` to ``end``, the label only
        before the beginning): plain text, no markup is interpreted."""
        body = Text(self.text[start:end], style=KINDS.get(self.kind, ""))
        if not self.label or start:
            return body
        return Text.assemble((f"{self.label}: ", LABELS.get(self.label, "bold")), body)


class Conversation(ScrollView):
    """The entries, newest at the bottom, drawn line by line (only what is on screen);
    scrolling to the top loads an older page."""

    DEFAULT_CSS = "Conversation { height: 1fr; padding: 0 1; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.can_focus = True
        self.entries: list[Entry] = []
        self.lines: list[Strip] = []  # every entry's lines, in order
        self.dirty: set[Entry] = set()
        self._width = 0  # the width the lines are wrapped at
        self._rich_style: Style | None = None
        self._following = True  # the end was in view at the last change
        #: Loads and shows the page before the oldest entry; set by the app per session.
        self.load_older: Callable[[], Awaitable[None]] | None = None
        self._loading = False

    def on_mount(self) -> None:
        """Draw the entries that grew, a frame at a time."""
        self.set_interval(1 / FRAME_RATE, self.draw)

    def on_resize(self) -> None:
        """Wrap everything again at the new width; keep the end in view if it was (a
        scroll position set while the view was smaller would show empty lines below)."""
        self.dirty.update(self.entries)
        self.draw()
        if self.scroll_y >= self.max_scroll_y or self._following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def clear(self) -> None:
        """Forget every entry (another session is opened)."""
        self.entries.clear()
        self.lines.clear()
        self.dirty.clear()
        self.virtual_size = Size(self._width, 0)
        self.refresh()  # (a layout pass: the scroll bar goes)

    def add(self, label: str, text: str, classes: str = "") -> Entry:
        """Append an entry; ``text`` must already be escaped."""
        entry = Entry(label, text, classes=classes)
        self.entries.append(entry)
        self.dirty.add(entry)
        return entry

    def grow(self, entry: Entry, text: str) -> None:
        """Add escaped ``text`` to ``entry``, drawn with the next frame."""
        entry.append(text)
        self.dirty.add(entry)

    def prepend(self, entries: list[Entry]) -> None:
        """Put an older page above everything, keeping what was on screen in view."""
        if not entries:
            return
        for entry in entries:
            self._wrap(entry)
        added = sum(len(entry.lines) for entry in entries)
        self.entries[:0] = entries
        self._relayout(0)
        self.scroll_to(y=self.scroll_y + added, animate=False, immediate=True)

    def draw(self) -> None:
        """Wrap the entries that changed since the last frame, and show them."""
        width = max(1, self.scrollable_content_region.width - 1)
        if width != self._width:
            self._width = width
            self.dirty.update(self.entries)
        if not self.dirty:
            return
        first = len(self.entries)
        for index in range(len(self.entries) - 1, -1, -1):  # changes are mostly at the end
            entry = self.entries[index]
            if entry in self.dirty:
                self._wrap(entry)
                first = index
                self.dirty.discard(entry)
                if not self.dirty:
                    break
        self.dirty.clear()
        self._relayout(first)

    def _wrap(self, entry: Entry) -> None:
        width = self._width or 80
        if entry.width != width:
            entry.width, entry.done, entry.done_lines = width, 0, []
        text = entry.text
        cut = text.rfind("\n") + 1  # paragraphs before it are finished
        if cut > entry.done:  # (each paragraph wraps on its own: the lines are the same)
            entry.done_lines += self._lines_of(entry.render(entry.done, cut - 1), width)
            entry.done = cut
        if entry.done == len(text) and entry.done:
            entry.lines = list(entry.done_lines)  # (no empty line after a final line break)
        else:
            tail = self._lines_of(entry.render(entry.done), width)
            entry.lines = entry.done_lines + tail

    def _lines_of(self, text: Text, width: int) -> list[Strip]:
        # Each line is made once, in the view's style and at its full width, so that
        # drawing the screen only picks lines (see render_line).
        console = self.app.console
        rendered = console.render_lines(text, console.options.update_width(width), pad=False)
        style = self._style()
        full = self.scrollable_content_region.width
        return [
            Strip(Segment.simplify(line)).apply_style(style).extend_cell_length(full, style)
            for line in rendered
        ]

    def _style(self) -> Style:
        # (computing rich_style walks the styles: it is kept until they change)
        if self._rich_style is None:
            self._rich_style = self.rich_style
        return self._rich_style

    def notify_style_update(self) -> None:
        """The styles changed (a theme, say): draw every line again in the new ones."""
        super().notify_style_update()
        self._rich_style = None
        self.dirty.update(self.entries)

    def _relayout(self, first: int) -> None:
        """Lay the lines out again from entry ``first`` on; follow the end if at the end."""
        at_end = self._following = self.scroll_y >= self.max_scroll_y
        before = self.entries[first - 1] if 0 < first <= len(self.entries) else None
        start = before.start + len(before.lines) if before is not None else 0
        del self.lines[start:]
        for entry in self.entries[first:]:
            entry.start = len(self.lines)
            self.lines.extend(entry.lines)
        self._resize(Size(self._width, len(self.lines)))
        if at_end:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def _resize(self, size: Size) -> None:
        """Set the scrollable size. Setting ``virtual_size`` lays the whole screen out again:
        done many times a second while a reply streams, that pass costs more than all the
        rest, so once the scroll bar is there (this size changes nothing else on the screen)
        the size is set as Textual does for a resize that needs no layout."""
        height = self.scrollable_content_region.height
        if self.virtual_size.height <= height or size.height <= height or not self._width:
            self.virtual_size = size
        else:
            self.set_reactive(ScrollView.virtual_size, size)
            self._scroll_update(size)

    def render_line(self, y: int) -> Strip:
        """One line of the screen: the line of the conversation scrolled to it."""
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        if index >= len(self.lines):
            return Strip.blank(width, self._style())
        line = self.lines[index]
        if scroll_x == 0 and line.cell_length == width:
            return line
        return line.crop_extend(scroll_x, scroll_x + width, self._style())

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

    def stream(self, message_id: str, text: str, label: str = "agent") -> None:
        """Continue a reply (starting its entry, labelled, with its first text)."""
        if not text:
            return
        self.open = message_id
        entry = self.replies.get(message_id)
        shown = terminal_safe(text)
        if entry is None:
            self.replies[message_id] = self.view.add(terminal_safe(label, newlines=False), shown)
        elif entry.length > BLOCK_CHARS and "\n" in shown:
            head, _, tail = shown.rpartition("\n")
            if head:
                self.view.grow(entry, head)
            self.replies[message_id] = self.view.add("", tail, "more")
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

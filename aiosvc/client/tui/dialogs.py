"""The dialogs: a new session (its agent and title), a rename, a yes-or-no question."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from aiosvc.client.tui.panels import safe

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 64; height: auto; max-height: 80%; padding: 1 2;
    border: thick $accent; background: $surface;
}}
"""


@attrs.frozen
class NewSession:
    """What the new-session dialog answers."""

    agent: str
    title: str


class NewSessionDialog(ModalScreen[NewSession | None]):
    """Choose the agent (Enter creates the session), with an optional title."""

    DEFAULT_CSS = DIALOG_CSS.format(name="NewSessionDialog")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, agents: list[dict[str, Any]]) -> None:
        super().__init__()
        self.agents = agents

    def compose(self) -> ComposeResult:
        """A title line and the list of agents."""
        with Vertical():
            yield Label("New session: title (optional), then choose the agent and press Enter")
            yield Input(placeholder="title", id="title")
            options = []
            for agent in self.agents:
                line = Text.assemble(safe(agent.get("name")), " (")
                line.append_text(safe(agent.get("kind")))
                line.append(", default)" if agent.get("default") else ")")
                options.append(Option(line, id=str(agent.get("name"))))
            yield OptionList(*options, id="agents")

    def on_mount(self) -> None:
        """Start on the default agent."""
        agents = self.query_one("#agents", OptionList)
        default = next((i for i, a in enumerate(self.agents) if a.get("default")), 0)
        agents.highlighted = default if self.agents else None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the title goes on to the agents."""
        event.stop()
        self.query_one("#agents", OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter on an agent creates the session."""
        event.stop()
        title = self.query_one("#title", Input).value
        self.dismiss(NewSession(agent=str(event.option.id), title=title))


class RenameDialog(ModalScreen[str | None]):
    """A new title for the open session."""

    DEFAULT_CSS = DIALOG_CSS.format(name="RenameDialog")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_now = title

    def compose(self) -> ComposeResult:
        """The title, ready to edit."""
        with Vertical():
            yield Label("Rename the session (Enter saves, Escape cancels)")
            yield Input(value=self.title_now, id="title")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter saves."""
        event.stop()
        self.dismiss(event.value)


class ConfirmDialog(ModalScreen[bool]):
    """A yes-or-no question: ``y`` or Enter says yes, ``n`` or Escape no."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "dismiss(True)", "Yes"),
        Binding("n,escape", "dismiss(False)", "No"),
    ]

    def __init__(self, question: Text) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        """The question and the keys."""
        with Vertical():
            yield Label(self.question, markup=False)
            yield Label("y: yes   n: no")

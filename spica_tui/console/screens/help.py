"""``?``: the key map, generated from the action registry with the configured keys."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from spica_tui.console.actions import ACTIONS, Scope, allowed, display_key, effective_key

SECTIONS: tuple[tuple[Scope, str], ...] = (
    ("app", "Everywhere"),
    ("dashboard", "Dashboard"),
    ("detail", "Stack detail"),
    ("transfer", "DataTransfer"),
    ("qfin", "QFin"),
)
NAVIGATION = (
    ("↑ ↓ pgup pgdn home end", "Move in the stacks table (the mouse wheel scrolls)"),
    ("tab / shift+tab", "Next / previous panel"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    """

    def __init__(self, remapped: dict[str, str], *, read_only: bool) -> None:
        super().__init__()
        self.remapped = remapped
        self.read_only = read_only
        #: The action names this key map lists (what the operator is offered).
        self.listed: list[str] = []

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for scope, title in SECTIONS:
            table.add_row(Text(title, "bold underline"), "")
            for action in ACTIONS:
                if scope not in action.scopes:
                    continue
                if not allowed(action.name, read_only=self.read_only):
                    continue
                self.listed.append(action.name)
                label = action.help + (" [changes the cluster]" if action.dangerous else "")
                table.add_row(display_key(effective_key(action, self.remapped)), label)
            table.add_row("", "")
        table.add_row(Text("Navigation", "bold underline"), "")
        for keys, what in NAVIGATION:
            table.add_row(keys, what)
        if self.read_only:
            table.add_row("", "")
            table.add_row(
                "",
                Text(
                    "read-only: launch, requeue, unlock, remove, transfer now, grade are off",
                    "yellow",
                ),
            )
        with VerticalScroll():
            yield Static(table)

    def action_close(self) -> None:
        self.dismiss(None)

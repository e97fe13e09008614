"""Confirmations: the plan the core computed, and Cancel as the default answer."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from spica_core.operations import Plan
from spica_core.text import printable


class ConfirmPlan(ModalScreen[bool]):
    """Shows :meth:`Plan.render` — the very text ``--dry-run`` prints — and asks.

    Focus starts on Cancel, so enter (or escape) changes nothing; the operator moves to the
    action button on purpose (tab, or the mouse). Dismisses with True only from that button.
    """

    AUTO_FOCUS = "#cancel"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("left,right", "switch", "Switch button", show=False),
    ]
    DEFAULT_CSS = """
    ConfirmPlan { align: center middle; }
    ConfirmPlan > #dialog {
        width: 90%;
        max-width: 140;
        height: auto;
        max-height: 85%;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    ConfirmPlan #question { text-style: bold; margin-bottom: 1; }
    ConfirmPlan #hidden { color: $text-warning; text-style: bold; margin-bottom: 1; }
    ConfirmPlan #plan-scroll { height: auto; max-height: 20; border: round $panel-lighten-2; }
    ConfirmPlan #buttons { height: auto; margin-top: 1; align-horizontal: right; }
    ConfirmPlan Button { margin-left: 2; }
    """

    def __init__(self, plan: Plan, *, marked: int = 0, hidden: int = 0) -> None:
        super().__init__()
        self.plan = plan
        self.marked = marked
        self.hidden = hidden

    def compose(self) -> ComposeResult:
        action = self.plan.request.action.value
        doable = len(self.plan.doable)
        noun = f"{doable} stack{'s' if doable != 1 else ''}"
        question = f"{action.capitalize()} {noun}?" if doable else f"Nothing to {action}."
        with Vertical(id="dialog"):
            yield Static(question, id="question")
            if self.marked:
                note = f"{self.marked} marked stack{'s' if self.marked != 1 else ''}"
                if self.hidden:
                    note += f", {self.hidden} of them hidden by the current filter"
                yield Static(note, id="hidden")
            with VerticalScroll(id="plan-scroll"):
                plan = printable(self.plan.render(), lines=True)
                yield Static(Text(plan, overflow="fold"), id="plan")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button(
                    f"{action.capitalize()} {noun}",
                    id="confirm",
                    variant="error",
                    disabled=not doable,
                )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_switch(self) -> None:
        self.focus_next() if self.focused and self.focused.id == "cancel" else self.focus_previous()

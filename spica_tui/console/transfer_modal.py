"""The confirmation of "transfer this runid now": the plan the core computed (dry run),
with Cancel as the default answer, as every confirmation of the console."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Static

from spica_core.text import printable
from spica_core.transfer.now import NowPlan
from spica_tui.console.modals import ConfirmPlan


class ConfirmTransfer(ConfirmPlan):
    """:class:`ConfirmPlan`'s keys, look and default (Cancel focused; True only from the
    action button), over a transfer plan instead of a stacks plan."""

    def __init__(self, now: NowPlan) -> None:
        # ConfirmPlan's own plan (an operations plan) is not used: compose is this class's.
        super().__init__(None)  # type: ignore[arg-type]
        self.now = now

    def compose(self) -> ComposeResult:
        plan = self.now.plan
        files = len(plan.files)
        noun = f"{files} file{'s' if files != 1 else ''}"
        if self.now.doable:
            question = f"Transfer runid {plan.runid} now ({noun})?"
        elif plan.plan.shortfall is not None:
            question = f"Runid {plan.runid} cannot be placed now."
        else:
            question = f"Nothing of runid {plan.runid} to transfer."
        with Vertical(id="dialog"):
            yield Static(printable(question), id="question")
            with VerticalScroll(id="plan-scroll"):
                text = printable(self.now.text, lines=True)
                yield Static(Text(text, overflow="fold"), id="plan")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button(
                    f"Transfer {noun} now",
                    id="confirm",
                    variant="error",
                    disabled=not self.now.doable,
                )

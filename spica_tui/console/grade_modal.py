"""The operator's grade of images: A-D, a comment from the seed's list and/or free text.

Nothing is checked here: the core (:func:`spica_core.qfin.grading.grade_images`) validates
the grade, the images and the comment, applies all or nothing and audits; its refusal is
shown as the console's notification. Escape or Cancel change nothing; the Grade button is
off until a grade is chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from spica_core.qfin.result import GRADES
from spica_core.text import printable

#: Image names listed in the question; more are counted.
SHOWN_NAMES = 8


@dataclass(frozen=True)
class GradeChoice:
    grade: str
    comment: str | None


def combined_comment(chosen: str | None, free: str) -> str | None:
    """The list's comment, the operator's own words, or both (list first)."""
    parts = [p for p in (chosen, free.strip()) if p]
    return "; ".join(parts) or None


class GradeImages(ModalScreen[GradeChoice | None]):
    AUTO_FOCUS = "#grade"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    GradeImages { align: center middle; }
    GradeImages > #dialog {
        width: 90%;
        max-width: 100;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    GradeImages #question { text-style: bold; margin-bottom: 1; }
    GradeImages .field { height: auto; margin-bottom: 1; }
    GradeImages .field Label { width: 10; padding-top: 1; }
    GradeImages #grade { width: 20; }
    GradeImages #comment, GradeImages #free { width: 1fr; }
    GradeImages #buttons { height: auto; margin-top: 1; align-horizontal: right; }
    GradeImages Button { margin-left: 2; }
    """

    def __init__(
        self,
        images: Sequence[str],
        comments: Sequence[str],
        *,
        current: Mapping[str, str | None] | None = None,
        proposal: str | None = None,
    ) -> None:
        super().__init__()
        self.images = tuple(images)
        self.comments = tuple(comments)
        #: Each image's grade now, as the screen last read it (a regrade shows).
        self.current = dict(current or {})
        self.proposal = proposal

    def _labelled(self, image: str) -> str:
        if image not in self.current:
            return printable(image)
        return f"{printable(image)} ({printable(self.current[image]) or 'not graded'})"

    def compose(self) -> ComposeResult:
        names = ", ".join(self._labelled(n) for n in self.images[:SHOWN_NAMES])
        if len(self.images) > SHOWN_NAMES:
            names += f" and {len(self.images) - SHOWN_NAMES} more"
        noun = f"{len(self.images)} image{'s' if len(self.images) != 1 else ''}"
        with Vertical(id="dialog"):
            yield Static(f"Grade {noun}: {names}", id="question")
            if self.proposal:
                yield Static(f"QFin proposes {self.proposal}", id="proposal")
            with Horizontal(classes="field"):
                yield Label("Grade")
                yield Select([(g, g) for g in GRADES], prompt="A-D", id="grade")
            with Horizontal(classes="field"):
                yield Label("Comment")
                yield Select([(c, c) for c in self.comments], prompt="from the list", id="comment")
            with Horizontal(classes="field"):
                yield Label("")
                yield Input(placeholder="and/or your own words", id="free")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button(f"Grade {noun}", id="confirm", variant="warning", disabled=True)

    def _value(self, selector: str) -> str | None:
        value = self.query_one(selector, Select).value
        return value if isinstance(value, str) else None

    def on_select_changed(self, event: Select.Changed) -> None:
        self.query_one("#confirm", Button).disabled = self._value("#grade") is None

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        grade = self._value("#grade")
        if event.button.id != "confirm" or grade is None:
            self.dismiss(None)
            return
        comment = combined_comment(self._value("#comment"), self.query_one("#free", Input).value)
        self.dismiss(GradeChoice(grade, comment))

    def action_cancel(self) -> None:
        self.dismiss(None)

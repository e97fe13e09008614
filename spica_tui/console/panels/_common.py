"""What the panels share: the bordered panel, cached row cells and the few formats they all
use."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from rich.text import Text
from textual.containers import Vertical

from spica_tui.console.panels.line_table import Cell

STALE = "dim"
BAR_FULL, BAR_EMPTY = "█", "░"


class Panel(Vertical):
    """A bordered dashboard panel; ``z`` (zoom) may give it the whole screen."""

    ALLOW_MAXIMIZE = True
    DEFAULT_CSS = """
    Panel {
        border: round $panel-lighten-2;
        border-title-color: $text-accent;
        border-title-style: bold;
        height: 1fr;
    }
    Panel:focus-within { border: round $accent; }
    """

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = title


class RowCache:
    """Cells per row, rebuilt only when what they show changed: a poll of 100 healthy nodes
    then costs a tuple comparison per node, not 800 new Text objects."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[object, list[Cell]]] = {}

    def cells(self, key: str, shown: object, build: Callable[[], list[Cell]]) -> list[Cell]:
        hit = self._rows.get(key)
        if hit is not None and hit[0] == shown:
            return hit[1]
        cells = build()
        self._rows[key] = (shown, cells)
        return cells


def bar(fraction: float, width: int = 10) -> Text:
    """A usage bar, coloured by how full it is."""
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    style = "green" if fraction < 0.7 else "yellow" if fraction < 0.9 else "red"
    return Text.assemble((BAR_FULL * full, style), (BAR_EMPTY * (width - full), "dim"))


def hms(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%H:%M:%S")


def age(now: datetime, moment: datetime | None) -> str:
    """``4 s``, ``3 min``, ``2 h``, ``5 d``: how old a piece of data is."""
    if moment is None:
        return "never"
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"

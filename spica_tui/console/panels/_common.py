"""What the panels share: diff-by-key table updates and the few formats they all use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

Cell = str | Text
Row = tuple[str, Sequence[Cell]]

STALE = "dim"
BAR_FULL, BAR_EMPTY = "█", "░"


class LiveTable(DataTable[Cell]):
    """A DataTable redrawn whole when its column widths change.

    DataTable measures new cells when idle, after it may already have drawn (and cached)
    rows with the previous widths: the header or a row then stays misaligned until its next
    change. Every table the console refreshes in place is one of these.
    """

    _drawn_widths: list[int] | None = None

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # Runs once per idle after new or changed cells, which are measured just before.
        super()._update_dimensions(new_rows)
        widths = [column.content_width for column in self.columns.values()]
        if widths != self._drawn_widths:
            self._drawn_widths = widths
            self.notify_style_update()  # drops the render caches, then refreshes


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
    Panel > DataTable { height: 1fr; background: $surface; }
    """

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = title


def sync_rows(table: DataTable[Cell], rows: Sequence[Row]) -> None:
    """Make ``table`` show ``rows`` (key, cells) by diff: only changed cells are written.

    In place when the rows already shown keep their order and new ones come last (a poll of
    the same nodes); otherwise rebuilt (a new problem on top: a few hundred rows at most).
    A row given the very same cells list as last time is skipped without comparing (see
    :class:`RowCache`). Call inside ``app.batch_update()``.
    """
    shown: dict[str, Sequence[Cell]] = table.__dict__.setdefault("_spica_shown", {})
    keys = [key for key, _ in rows]
    wanted = set(keys)
    # Every row is added with its key (value None only for a keyless add_row).
    current = [row.key.value for row in table.ordered_rows if row.key.value is not None]
    kept = [key for key in current if key in wanted]
    if keys[: len(kept)] != kept:
        table.clear()
        shown.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
            shown[key] = cells
        return
    for key in current:
        if key not in wanted:
            table.remove_row(key)
            shown.pop(key, None)
    columns = list(table.columns)
    for key, cells in rows[: len(kept)]:
        if shown.get(key) is cells:
            continue
        for column, before, after in zip(columns, table.get_row(key), cells, strict=False):
            if before != after:
                table.update_cell(key, column, after)
        shown[key] = cells
    for key, cells in rows[len(kept) :]:
        table.add_row(*cells, key=key)
        shown[key] = cells


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

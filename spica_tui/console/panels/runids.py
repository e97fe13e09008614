"""Runid distribution, runid x node, as on the seed's DataTransfer page: ``100.0% [2 files]``."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from rich.text import Text
from textual.app import ComposeResult

from spica_core.console_data import ConsoleSnapshot
from spica_tui.console.panels._common import Panel, RowCache, hms
from spica_tui.console.panels.line_table import Cell, GridTable


class RunidsPanel(Panel):
    def __init__(self, *, id: str | None = "runids") -> None:
        super().__init__("Runid distribution", id=id)
        self._shown_nodes: tuple[str, ...] | None = None
        #: What the table shows: a poll that changed nothing (the usual one) builds nothing;
        #: at 40 runids x 100 nodes a rebuild is 4,000 cells.
        self._shown: tuple[object, ...] | None = None
        self._cells = RowCache()

    def compose(self) -> ComposeResult:
        yield GridTable(fixed_columns=1, zebra=True)

    def show(self, snap: ConsoleSnapshot, now: datetime) -> None:
        table = self.query_one(GridTable)
        if snap.db is None:
            return
        dist = snap.db.distribution
        title = "Runid distribution"
        if snap.db_stale:
            title += f" [stale: as of {hms(snap.db.read_at)}]"
        self.border_title = title
        style = "dim" if snap.db_stale else ""
        if (dist, style) == self._shown:
            return
        self._shown = (dist, style)
        if dist.nodes != self._shown_nodes:
            table.set_columns("runid", "images", *dist.nodes)
            self._shown_nodes = dist.nodes
            self._cells = RowCache()

        def build(runid: str) -> list[Cell]:
            cells: list[Cell] = [
                Text(runid, "bold " + style),
                Text(str(dist.totals.get(runid, 0)), style),
            ]
            for node in dist.nodes:
                value = dist.cell(runid, node)
                cells.append(Text(value, "dim" if value == "-" else style))
            return cells

        rows = []
        for runid in dist.runids:
            files = [dist.files.get((runid, n)) for n in dist.nodes]
            shown = (style, dist.totals.get(runid), files)
            rows.append((runid, self._cells.cells(runid, shown, partial(build, runid))))
        table.set_rows(rows)

"""Runid distribution, runid x node, as on the seed's DataTransfer page: ``100.0% [2 files]``."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable

from spica_core.console_data import ConsoleSnapshot
from spica_tui.console.panels._common import Cell, LiveTable, Panel, hms, sync_rows


class RunidsPanel(Panel):
    def __init__(self, *, id: str | None = "runids") -> None:
        super().__init__("Runid distribution", id=id)
        self._shown_nodes: tuple[str, ...] | None = None

    def compose(self) -> ComposeResult:
        yield LiveTable(cursor_type="row", zebra_stripes=True)

    def show(self, snap: ConsoleSnapshot, now: datetime) -> None:
        table: DataTable[Cell] = self.query_one(DataTable)
        if snap.db is None:
            return
        dist = snap.db.distribution
        title = "Runid distribution"
        if snap.db_stale:
            title += f" [stale: as of {hms(snap.db.read_at)}]"
        self.border_title = title
        if dist.nodes != self._shown_nodes:
            table.clear(columns=True)
            table.add_columns("runid", "images", *dist.nodes)
            self._shown_nodes = dist.nodes
        style = "dim" if snap.db_stale else ""
        rows = []
        for runid in dist.runids:
            cells: list[Cell] = [
                Text(runid, "bold " + style),
                Text(str(dist.totals.get(runid, 0)), style),
            ]
            for node in dist.nodes:
                value = dist.cell(runid, node)
                cells.append(Text(value, "dim" if value == "-" else style))
            rows.append((runid, cells))
        sync_rows(table, rows)

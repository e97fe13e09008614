"""DataTransfer disks, per node as on the seed's page: % used, virtual free, total.

Virtual free is the planner's figure (free - reserve - what planned and running transfers
and unstarted stacks promise there), the same as ``spica transfer status`` and the
DataTransfer screen show, from the poll's disks and the last read of dbspica.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

from rich.text import Text
from textual.app import ComposeResult

from spica_core.cluster_snapshot import Liveness, NodeSnapshot
from spica_core.console_data import ConsoleSnapshot
from spica_core.read_model.transfer import spaces_of
from spica_core.units import gigabytes
from spica_tui.console.panels._common import STALE, Panel, RowCache, bar, hms
from spica_tui.console.panels.line_table import Cell, GridTable

COLUMNS = ("node", "used", "virtual free", "total", "as of")


class DataTransferPanel(Panel):
    def __init__(self, *, id: str | None = "datatransfer") -> None:
        super().__init__("DataTransfer disks", id=id)
        self._cache = RowCache()

    def compose(self) -> ComposeResult:
        yield GridTable(*COLUMNS, zebra=True)

    def show(self, snap: ConsoleSnapshot, now: datetime) -> None:
        claims = snap.db.claims if snap.db is not None else None
        virtual: dict[str, int] = {}
        if snap.cluster is not None and claims is not None:
            virtual = {s.node: s.virtual_free_bytes for s in spaces_of(snap.cluster, claims)}
        rows = []
        for n in snap.nodes:
            if not n.partitions:
                continue
            free = virtual.get(n.name, sum(p.virtual_free_bytes for p in n.partitions))
            shown = (
                n.liveness,
                n.partitions,
                free,
                None if n.liveness is Liveness.UP else n.last_seen,
            )
            rows.append((n.name, self._cache.cells(n.name, shown, partial(disk_cells, n, free))))
        self.query_one(GridTable).set_rows(rows)


def disk_cells(node: NodeSnapshot, virtual_free: int) -> list[Cell]:
    """The node's partitions summed: the seed shows one line per node."""
    total = sum(p.total_bytes for p in node.partitions)
    used = sum(p.used_bytes for p in node.partitions)
    fraction = used / total if total else 0.0
    stale = node.liveness is not Liveness.UP
    dim = STALE if stale else ""
    used_cell = bar(fraction, 8)
    used_cell.append(f" {100 * fraction:5.1f} %", dim)
    return [
        Text(node.name, dim),
        used_cell,
        Text(gigabytes(virtual_free), dim, justify="right"),
        Text(gigabytes(total), dim, justify="right"),
        Text(hms(node.last_seen), "bold red") if stale else Text("now", "dim"),
    ]

"""DataTransfer, as on the seed's page: the nodes' disks, the runids waiting in the
repositories, the runid distribution, and the transfers in progress.

Every poll's snapshot makes the screen read its data again (through the core, in a
worker: :class:`~spica_tui.console.transfer_backend.TransferBackend`); the disks' figures
are the snapshot's, so the screen polls no node itself. ``n`` transfers the selected
waiting runid now: the core's dry-run plan in a confirmation whose default is Cancel, then
the plan stored and the copy run in an app worker (leaving the screen does not stop it);
its progress shows from the transfer rows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, ProgressBar, Static

from spica_core.console_transfer import TransferView
from spica_core.read_model.transfer_progress import RunidProgress
from spica_core.text import printable
from spica_core.units import gigabytes, human_bytes
from spica_tui.console.actions import BY_TEXTUAL, bindings
from spica_tui.console.panels.header import HeaderPanel
from spica_tui.console.panels.key_bar import KeyBar
from spica_tui.console.refresh import describe_failure
from spica_tui.console.screens.reading import ReadingScreen

if TYPE_CHECKING:
    from spica_tui.console.app import SpicaConsole

LIVENESS_STYLES = {"up": "green", "down": "bold red", "agent-missing": "yellow", "unknown": "dim"}
BAR_WIDTH = 12
#: Fill above which a disk's bar turns yellow, then red.
WARN_FILL, FULL_FILL = 0.75, 0.9

Row = tuple[str, tuple[Text, ...]]


def fill_bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    """``█████░░░░ 55.0 %``, green, yellow past :data:`WARN_FILL`, red past :data:`FULL_FILL`."""
    fraction = min(max(fraction, 0.0), 1.0)
    style = "red" if fraction >= FULL_FILL else "yellow" if fraction >= WARN_FILL else "green"
    full = round(fraction * width)
    return Text.assemble(
        ("█" * full, style), ("░" * (width - full), "dim"), f" {100 * fraction:5.1f} %"
    )


def rate(bytes_per_second: float | None) -> str:
    return "-" if bytes_per_second is None else f"{bytes_per_second / 1e6:.2f} MB/s"


def widget_id(prefix: str, name: str) -> str:
    """A Textual id for a runid (ids allow letters, digits, ``_`` and ``-`` only)."""
    return f"{prefix}-{re.sub(r'[^A-Za-z0-9_-]', '_', name)}"


class RunidTransfer(Horizontal):
    """One runid's transfer: its name, a bar of the bytes landed, files and throughput."""

    DEFAULT_CSS = """
    RunidTransfer { height: 1; }
    RunidTransfer .runid { width: 10; text-style: bold; }
    RunidTransfer ProgressBar { width: 40; }
    RunidTransfer .stats { width: 1fr; }
    """

    def __init__(self, first: RunidProgress, view: TransferView) -> None:
        super().__init__(id=widget_id("transfer", first.runid))
        self.runid = first.runid
        self._first = (first, view)

    def on_mount(self) -> None:
        self.show(*self._first)

    def compose(self) -> ComposeResult:
        yield Static(printable(self.runid), classes="runid")
        yield ProgressBar(total=100, show_eta=False, id=widget_id("bar", self.runid))
        yield Static("", classes="stats")

    def show(self, p: RunidProgress, view: TransferView) -> None:
        self.query_one(ProgressBar).update(total=100, progress=round(100 * p.fraction, 1))
        parts = [
            f"{p.done}/{p.files} files",
            f"{human_bytes(p.done_bytes)} of {human_bytes(p.bytes)}",
            rate(p.throughput(view.read_at)),
        ]
        if p.running:
            parts.append(f"{p.running} copying")
        if p.waiting:
            parts.append(f"{p.waiting} waiting")
        if p.failed:
            parts.append(f"{p.failed} FAILED")
        style = "bold red" if p.failed else "" if p.active else "green"
        self.query_one(".stats", Static).update(Text("  ".join(parts), style))


class DataTransferScreen(ReadingScreen):
    SCOPE = "transfer"
    BINDINGS = bindings("transfer")
    DEFAULT_CSS = """
    DataTransferScreen #transfer-body { padding: 0 1; }
    DataTransferScreen .section { text-style: bold; color: $text-accent; margin-top: 1; }
    DataTransferScreen DataTable { height: auto; max-height: 14; }
    DataTransferScreen #transfers { height: auto; }
    """

    app: SpicaConsole

    def __init__(self) -> None:
        super().__init__()
        self.view: TransferView | None = None
        self._shown: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield HeaderPanel()
        with VerticalScroll(id="transfer-body"):
            yield Static("Disks", classes="section", id="disks-title")
            disks: DataTable[Text] = DataTable(id="disks", cursor_type="row", zebra_stripes=True)
            disks.add_columns("node", "status", "used", "virtual free", "total", "pending stacks")
            yield disks
            yield Static(
                "Runids waiting in the repositories", classes="section", id="waiting-title"
            )
            waiting: DataTable[Text] = DataTable(
                id="waiting", cursor_type="row", zebra_stripes=True
            )
            waiting.add_columns(
                "runid", "images", "runid size", "disk space needed", "planned", "filters"
            )
            yield waiting
            yield Static("Runid distribution", classes="section")
            yield DataTable(id="distribution", cursor_type="row", zebra_stripes=True)
            yield Static("Transfers", classes="section")
            with Vertical(id="transfers"):
                yield Static(Text("no transfer under way", "dim"), id="no-transfers")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#waiting", DataTable).focus()
        super().on_mount()

    # -- data in

    async def read(self) -> None:
        snap = self.app.poller.snapshot
        try:
            view = await self.app.transfers.view(snap.cluster, self.app.clock())
        except Exception as exc:  # dbspica away: keep what is shown, say so
            self.query_one("#waiting-title", Static).update(
                Text(f"Runids waiting — not read: {describe_failure(exc)}", "bold red")
            )
            return
        self.show_view(view)

    def show_view(self, view: TransferView) -> None:
        self.view = view
        with self.app.batch_update():
            self._fill("disks", self._disk_rows(view))
            self.query_one("#waiting-title", Static).update(
                "Runids waiting in the repositories "
                f"(space needed: {view.status.space_factor:g} x size)"
            )
            self._fill("waiting", self._waiting_rows(view))
            self._show_distribution(view)
            self._show_progress(view)
        self.refresh_bindings()

    def _fill(self, table_id: str, rows: list[Row]) -> None:
        """Rebuild a small table when its rows changed, keeping the cursor on its key."""
        if self._shown.get(table_id) == rows:
            return
        self._shown[table_id] = rows
        table: DataTable[Text] = self.query_one(f"#{table_id}", DataTable)
        selected = self.selected_key(table)
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        keys = [key for key, _ in rows]
        if selected in keys:
            table.move_cursor(row=keys.index(selected))

    @staticmethod
    def selected_key(table: DataTable[Text]) -> str | None:
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def _disk_rows(self, view: TransferView) -> list[Row]:
        out: list[Row] = []
        for n in view.status.disks:
            known = bool(n.partitions)
            dim = "" if n.answers else "dim"
            out.append(
                (
                    n.node,
                    (
                        Text(n.node, dim),
                        Text(n.liveness, LIVENESS_STYLES.get(n.liveness, "")),
                        fill_bar(n.used_percent / 100) if known else Text("-", "dim"),
                        Text(
                            gigabytes(n.virtual_free_bytes) if known else "-", dim, justify="right"
                        ),
                        Text(gigabytes(n.total_bytes) if known else "-", dim, justify="right"),
                        Text(str(n.pending_stacks), justify="right"),
                    ),
                )
            )
        return out

    def _waiting_rows(self, view: TransferView) -> list[Row]:
        copying = self.app.transfers.copying
        out: list[Row] = []
        for r in view.status.runids:
            planned = f"{r.planned}" + (" (copying)" if r.runid in copying else "")
            out.append(
                (
                    r.runid,
                    (
                        Text(r.runid, "bold"),
                        Text(str(r.images), justify="right"),
                        Text(gigabytes(r.bytes), justify="right"),
                        Text(gigabytes(r.needed_bytes), justify="right"),
                        Text(planned, justify="right"),
                        Text(" ".join(f"{f}:{n}" for f, n in r.filters.items())),
                    ),
                )
            )
        return out

    def _show_distribution(self, view: TransferView) -> None:
        dist = view.distribution
        table: DataTable[Text] = self.query_one("#distribution", DataTable)
        if self._shown.get("distribution-columns") != dist.nodes:
            self._shown["distribution-columns"] = dist.nodes
            self._shown.pop("distribution", None)
            table.clear(columns=True)
            table.add_columns("runid", "images", *dist.nodes)
        rows: list[Row] = []
        for runid in dist.runids:
            cells = [Text(runid, "bold"), Text(str(dist.totals.get(runid, 0)), justify="right")]
            for node in dist.nodes:
                value = dist.cell(runid, node)
                cells.append(Text(value, "dim" if value == "-" else ""))
            rows.append((runid, tuple(cells)))
        self._fill("distribution", rows)

    def _show_progress(self, view: TransferView) -> None:
        box = self.query_one("#transfers", Vertical)
        shown = {w.runid: w for w in box.query(RunidTransfer)}
        wanted = {p.runid for p in view.progress}
        for runid, widget in shown.items():
            if runid not in wanted:
                widget.remove()
        for p in view.progress:
            found = shown.get(p.runid)
            if found is None:
                box.mount(RunidTransfer(p, view))
            else:
                found.show(p, view)
        self.query_one("#no-transfers", Static).display = not view.progress

    # -- what is offered

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        entry = BY_TEXTUAL.get(action)
        if entry is None or not entry.dangerous:
            return True
        return self.app.offers(entry.name, None)

    # -- actions

    def action_transfer_now(self) -> None:
        runid = self.selected_key(self.query_one("#waiting", DataTable))
        if runid is None:
            self.app.notify("No runid waits in the repositories.", severity="warning")
            return
        self.app.transfer_now(runid)

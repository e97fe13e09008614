"""Nodes: liveness, load, disks, the running stack and its line, the daemon, last seen, and
a mark on a node whose application binaries differ from the registered ones (``≠`` after its
name, the applications in the last-error column unless an error holds it), as ``spica apps``
or the monitor last found them in dbspica; a QFin lock whose holder is dead, in red after the
running stack."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from rich.text import Text
from textual.app import ComposeResult

from spica_core.cluster_snapshot import Liveness, NodeSnapshot, QueueEntry
from spica_core.console_data import ConsoleSnapshot
from spica_core.text import one_line
from spica_tui.console.panels._common import STALE, Panel, RowCache, age, bar, hms
from spica_tui.console.panels.line_table import Cell, GridTable

DOTS = {
    Liveness.UP: ("●", "green"),
    Liveness.AGENT_MISSING: ("●", "yellow"),
    Liveness.DOWN: ("●", "bold red"),
    Liveness.UNKNOWN: ("○", "dim"),
}
#: After the name of a node whose binaries differ from the registered ones.
DIFFERS_MARK = "≠"
DIFFERS_STYLE = "bold magenta"
COLUMNS = ("", "node", "load", "disks", "daemon", "last seen", "last error", "running")


class NodesPanel(Panel):
    def __init__(self, *, heartbeat_stale: float, id: str | None = "nodes") -> None:
        super().__init__("Nodes", id=id)
        self.heartbeat_stale = heartbeat_stale
        self._cache = RowCache()

    def compose(self) -> ComposeResult:
        table = GridTable(*COLUMNS, fixed_columns=2, zebra=True)
        table.tooltip = "disks: one bar per raid partition (used %)"
        yield table

    def show(self, snap: ConsoleSnapshot, now: datetime) -> None:
        nodes = snap.nodes
        up = sum(1 for n in nodes if n.liveness.reachable)
        self.border_title = f"Nodes {up}/{len(nodes)} up" if nodes else "Nodes"
        drift = snap.db.binary_drift if snap.db is not None else {}
        rows = [
            (
                n.name,
                self._cache.cells(
                    n.name,
                    (*shown_by_row(n, now, self.heartbeat_stale), drift.get(n.name, ())),
                    partial(node_cells, n, now, self.heartbeat_stale, drift.get(n.name, ())),
                ),
            )
            for n in nodes
        ]
        self.query_one(GridTable).set_rows(rows)


def shown_by_row(node: NodeSnapshot, now: datetime, heartbeat_stale: float) -> tuple[object, ...]:
    """Everything :func:`node_cells` shows of a node, to rebuild its row only on a change."""
    heartbeat = node.heartbeat_age
    fresh = heartbeat is not None and heartbeat <= heartbeat_stale
    return (
        node.liveness,
        None if node.load is None else round(node.load[0], 1),
        tuple((p.name, round(100 * p.used_fraction)) for p in node.partitions),
        fresh or (None if heartbeat is None else round(heartbeat)),
        None if node.liveness.reachable else (node.last_seen, age(now, node.last_seen)),
        node.last_error,
        tuple((e.stack, e.progress, e.lines, e.claim) for e in node.running()),
        dead_qfin_locks(node),
    )


def node_cells(
    node: NodeSnapshot, now: datetime, heartbeat_stale: float, differs: tuple[str, ...] = ()
) -> list[Cell]:
    """The row of ``node``; ``differs``: the applications whose binary there is not the
    registered one."""
    stale = node.liveness is not Liveness.UP
    dim = STALE if stale else ""
    dot, dot_style = DOTS[node.liveness]
    load = "-" if node.load is None else f"{node.load[0]:.1f}"
    disks = Text()
    for part in node.partitions:
        if disks:
            disks.append(" ")
        disks.append_text(bar(part.used_fraction, 4))
        disks.append(f"{100 * part.used_fraction:3.0f}%", dim)
    name = Text(node.name, "bold " + dim if stale else "bold")
    error = Text(one_line(node.last_error), "red" if node.liveness is Liveness.DOWN else "yellow")
    if differs:
        name.append(f" {DIFFERS_MARK}", DIFFERS_STYLE)
        if not node.last_error:
            error = Text(f"binaries differ: {', '.join(differs)}", DIFFERS_STYLE)
    return [
        Text(dot, dot_style),
        name,
        Text(load, dim),
        disks if node.partitions else Text("-", "dim"),
        daemon_cell(node, heartbeat_stale),
        last_seen_cell(node, now),
        error,
        running_cell(node, dim),
    ]


def dead_qfin_locks(node: NodeSnapshot) -> tuple[str, ...]:
    """Partitions whose QFin lock's holder is dead: their QFin units wait for an operator
    (``spica unlock --qfin PARTITION --node NODE``)."""
    return tuple(lock.partition for lock in node.qfin_locks if not lock.alive)


def running_cell(node: NodeSnapshot, dim: str) -> Text:
    running = node.running()
    dead = dead_qfin_locks(node)
    text = _running_text(running, dim) if running else Text("-" if not dead else "", "dim")
    if dead:
        text.append(" " if running else "")
        text.append(f"dead QFin lock {' '.join(dead)}", "bold red")
    return text


def _running_text(running: list[QueueEntry], dim: str) -> Text:
    first = running[0]
    text = Text(first.stack, dim)
    if first.lines:
        text.append(f" line {min((first.progress or 0) + 1, first.lines)}/{first.lines}", "dim")
    if first.claim is not None and not first.claim.alive:
        text.append(" (claimer dead)", "bold red")
    if len(running) > 1:
        text.append(f" +{len(running) - 1}", "bold")
    return text


def daemon_cell(node: NodeSnapshot, heartbeat_stale: float) -> Text:
    if node.liveness is not Liveness.UP:
        return Text("?", STALE)
    if node.heartbeat_age is None:
        return Text("no daemon", "yellow")
    seconds = node.heartbeat_age
    if seconds > heartbeat_stale:
        return Text(f"silent {seconds:.0f} s", "bold red")
    return Text("ok", "green")  # a fresh heartbeat; its age would only churn the table


def last_seen_cell(node: NodeSnapshot, now: datetime) -> Text:
    """``now`` while the node answers (the header has the poll's age); the time of the last
    good answer and its age once it does not."""
    if node.last_seen is None:
        return Text("never", "red" if node.liveness is Liveness.DOWN else "dim")
    if node.liveness.reachable:
        return Text("now", "dim")
    return Text(f"{hms(node.last_seen)} ({age(now, node.last_seen)} ago)", "bold red")

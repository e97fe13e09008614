"""Problems, newest first, as on the seed's problem page: hardware in red, back to life in
green; security events (a host key that does not match) white on red, apart from both."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from rich.text import Text
from textual.app import ComposeResult

from spica_core.console_data import ConsoleSnapshot
from spica_core.text import one_line, printable
from spica_tui.console.panels._common import Panel, RowCache, hms
from spica_tui.console.panels.line_table import Cell, GridTable

COLUMNS = ("time", "kind", "node", "stack", "runid", "filter", "message")
#: A security problem (a node's host key does not match) stands apart from hardware's red.
SECURITY_STYLE = "bold white on red"


class ProblemsPanel(Panel):
    def __init__(self, *, id: str | None = "problems") -> None:
        super().__init__("Problems", id=id)
        self._shown: tuple[dict[str, Any], ...] | None = None
        self._cells = RowCache()

    def compose(self) -> ComposeResult:
        yield GridTable(*COLUMNS)

    def show(self, snap: ConsoleSnapshot, now: datetime) -> None:
        if snap.db is None:
            return
        problems = snap.db.problems
        open_ = sum(1 for p in problems if not p["resolved"])
        title = f"Problems ({open_} open)" if problems else "Problems"
        if snap.db_stale:
            title += f" [stale: as of {hms(snap.db.read_at)}]"
        self.border_title = title
        if problems == self._shown:
            return  # the usual poll: nothing new, nothing built
        self._shown = problems
        rows = [
            (str(p["id"]), self._cells.cells(str(p["id"]), p, partial(problem_cells, p)))
            for p in problems
        ]
        self.query_one(GridTable).set_rows(rows)


def problem_style(problem: dict[str, Any]) -> str:
    message = problem["message"] or ""
    if problem["kind"] == "security":
        return SECURITY_STYLE
    if "back to life" in message:
        return "green"
    if problem["kind"] == "hardware":
        return "bold red"
    return "dim" if problem["resolved"] else ""


def problem_cells(p: dict[str, Any]) -> list[Cell]:
    style = problem_style(p)
    when = str(p["created_at"] or "")
    shown = when[5:10] + " " + when[11:19] if len(when) >= 19 else when
    return [
        Text(shown, "dim"),
        Text(printable(p["kind"]), style),
        Text(printable(p["node"]), style),
        Text(printable(p["stack"]), style),
        Text(printable(p["runid"]), style),
        Text(printable(p["filter"]), style),
        Text(one_line(p["message"]), style),
    ]

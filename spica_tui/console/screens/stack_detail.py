"""One stack: metadata, its results and thumbnail once recorded, files, the commands with
per-line status, the failed line's log.

The log tail is fetched from the stack's node over SSH (the agent's ``tail`` verb) through
the core, and so is the thumbnail (the node's SFTP session); the rest comes from dbspica.
Requeue (and the other actions) work from here on this stack; the next snapshot reloads the
detail so the new state shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from spica_core.console_data import CommandLine, LogTail, command_lines
from spica_core.errors import NotFound
from spica_core.operations import OpAction
from spica_core.read_model.results import FIGURES, RESULT_PATHS, format_figure, format_seconds
from spica_core.reports import StackDetail
from spica_core.text import printable
from spica_tui.console.actions import BY_TEXTUAL, bindings
from spica_tui.console.panels.header import HeaderPanel
from spica_tui.console.panels.key_bar import KeyBar
from spica_tui.console.panels.line_table import GridTable
from spica_tui.console.panels.stacks import STATE_STYLES
from spica_tui.console.screens.reading import ReadingScreen
from spica_tui.console.thumbnail import ThumbnailView

if TYPE_CHECKING:
    from spica_tui.console.app import SpicaConsole

LINE_STYLES = {"done": "green", "failed": "bold red", "running": "bold yellow", "not run": "dim"}


class StackDetailScreen(ReadingScreen):
    SCOPE = "detail"
    BINDINGS = bindings("detail")
    DEFAULT_CSS = """
    StackDetailScreen #detail-body { padding: 0 1; }
    StackDetailScreen .section {
        text-style: bold;
        color: $text-accent;
        margin-top: 1;
    }
    StackDetailScreen GridTable { height: auto; max-height: 16; }
    StackDetailScreen #results-row { height: auto; }
    StackDetailScreen #results { width: auto; margin-right: 4; }
    StackDetailScreen #log {
        border: round $panel-lighten-2;
        padding: 0 1;
        height: auto;
        min-height: 3;
    }
    """

    app: SpicaConsole

    def __init__(self, stack: str) -> None:
        super().__init__()
        self.stack = stack
        self.detail: StackDetail | None = None
        self.tail: LogTail | None = None
        self._tail_for: tuple[str, int | None] | None = None
        self._force_tail = False
        #: The result whose thumbnail is shown (its path and when it was recorded).
        self._thumbnail_for: tuple[str | None, str | None] | None = None

    def compose(self) -> ComposeResult:
        yield HeaderPanel()
        with VerticalScroll(id="detail-body"):
            yield Static(id="meta")
            yield Static("Results", classes="section results", id="results-title")
            with Horizontal(id="results-row", classes="results"):
                yield Static(id="results")
                yield ThumbnailView(id="thumbnail")
            yield Static("Commands", classes="section")
            yield GridTable("line", "status", "exit", "try", "command", id="commands")
            yield Static("Log tail", id="log-title", classes="section")
            yield Static(Text("fetching from the node…", "dim"), id="log")
            yield Static("Files", classes="section")
            yield GridTable("image", "role", "filter", id="files")
        yield KeyBar()

    # -- data in

    async def read(self) -> None:
        force, self._force_tail = self._force_tail, False
        try:
            detail = await self.app.backend.detail(self.stack)
        except NotFound:
            self._gone()
            return
        except Exception as exc:  # dbspica away: keep what is shown, say so
            self.notify(f"stack {self.stack}: {exc}", severity="error")
            return
        self._show(detail)
        await self._thumbnail(detail, force)
        row = detail.stack
        key = (row.state, row.failed_line)
        if force or key != self._tail_for:
            if row.lines or detail.runs or row.state in ("failed", "running", "completed"):
                tail = await self.app.backend.log_tail(row.node, self.stack)
            else:
                tail = LogTail(self.stack, row.node, error="not run yet: no log")
            self._tail_for = key
            self._show_tail(tail)

    async def _thumbnail(self, detail: StackDetail, force: bool) -> None:
        """Fetch the thumbnail from the stack's node when a result names a new one."""
        result = detail.result
        if result is None:
            return
        key = (result.get("thumbnail_path"), result.get("recorded_at"))
        if key == self._thumbnail_for and not force:
            return
        row = detail.stack
        thumbnail = await self.app.results.thumbnail(row.name, row.node, key[0])
        self._thumbnail_for = key
        await self.query_one(ThumbnailView).show(thumbnail)

    def _gone(self) -> None:
        self.detail = None
        self.query_one("#meta", Static).update(
            Text(f"{self.stack}: no longer in dbspica (removed)", "bold yellow")
        )
        self.refresh_bindings()

    def _show(self, detail: StackDetail) -> None:
        self.detail = detail
        s = detail.stack
        grid = Table.grid(padding=(0, 2))
        grid.add_column(width=11)
        grid.add_column(min_width=36)
        grid.add_column(width=11)
        grid.add_column()
        state = Text(s.state, STATE_STYLES.get(s.state, ""))
        pairs: list[tuple[str, str | Text]] = [
            ("stack", Text(printable(s.name), "bold")),
            ("state", state),
            ("node", _plain(s.node)),
            ("step", _plain(s.step)),
            ("survey", _plain(s.survey)),
            ("filter", _plain(s.filter)),
            ("release", _plain(s.release)),
            ("runid", _plain(s.runid)),
            ("priority", str(s.priority)),
            ("ranking", _plain(s.ranking)),
            ("progress", f"{s.progress}/{s.lines} lines"),
            ("failed line", "-" if s.failed_line is None else str(s.failed_line)),
            ("exit code", "-" if s.exit_code is None else str(s.exit_code)),
            ("created", _t(s.created_at)),
            ("launched", _t(s.launched_at)),
            ("started", _t(s.started_at)),
            ("finished", _t(s.finished_at)),
            ("updated", _t(s.updated_at)),
        ]
        for i in range(0, len(pairs), 2):
            (k1, v1), (k2, v2) = pairs[i], pairs[i + 1] if i + 1 < len(pairs) else ("", "")
            grid.add_row(Text(k1, "dim"), v1, Text(k2, "dim"), v2)
        below = Table.grid(padding=(0, 2))
        below.add_column(width=11)
        below.add_column()
        if s.error:
            below.add_row(Text("error", "dim"), Text(printable(s.error, lines=True), "bold red"))
        if detail.apps:
            apps = ", ".join(f"{a['name']} {a['version']}" for a in detail.apps)
            below.add_row(Text("apps", "dim"), _plain(apps))
        self.query_one("#meta", Static).update(Group(grid, below))
        for part in self.query(".results"):
            part.display = detail.result is not None
        if detail.result is not None:
            self.query_one("#results", Static).update(results_grid(detail.result))
        with self.app.batch_update():
            rows = [(str(line.number), _line_cells(line)) for line in command_lines(detail)]
            self.query_one("#commands", GridTable).set_rows(rows)
            self.query_one("#files", GridTable).set_rows(
                (str(i), [_plain(f["image"]), _plain(f["role"]), _plain(f["filter"])])
                for i, f in enumerate(detail.files)
            )
        self.refresh_bindings()

    def _show_tail(self, tail: LogTail) -> None:
        self.tail = tail
        title = self.query_one("#log-title", Static)
        body = self.query_one("#log", Static)
        if tail.error:
            title.update(Text(f"Log tail ({printable(tail.node) or '-'})"))
            body.update(Text(printable(tail.error, lines=True), "yellow"))
            return
        where = f"line {tail.line}" if tail.line else "latest line"
        title.update(
            Text(
                printable(f"Log tail: {where} on {tail.node}, {tail.path}")
                + (" (end of a longer log)" if tail.truncated else "")
            )
        )
        body.update(Text(printable(tail.text.rstrip("\n"), lines=True) or "(empty log)"))

    # -- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        entry = BY_TEXTUAL.get(action)
        if entry is None or not entry.dangerous:
            return True
        if self.detail is None:
            return False
        row = self.detail.stack
        return self.app.offers(entry.name, row.node, row.state)

    def action_reload_log(self) -> None:
        self._force_tail = True
        self.load()

    def _operate(self, action: OpAction) -> None:
        self.app.start_operation(action, (self.stack,))

    def action_launch(self) -> None:
        self._operate(OpAction.LAUNCH)

    def action_requeue(self) -> None:
        self._operate(OpAction.REQUEUE)

    def action_unlock(self) -> None:
        self._operate(OpAction.UNLOCK)

    def action_remove(self) -> None:
        self._operate(OpAction.REMOVE)

    def operation_done(self, applied: set[str]) -> None:
        self.load()


def results_grid(result: dict[str, Any]) -> Table:
    """The recorded figures, the files on the node and the seconds per step."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(width=20)
    grid.add_column()
    for key, label, _ in FIGURES:
        grid.add_row(Text(label, "dim"), format_figure(key, result.get(key)))
    steps = result.get("step_seconds") or {}
    if steps:
        times = ", ".join(
            f"{printable(str(step))} {format_seconds(float(sec))}" for step, sec in steps.items()
        )
        grid.add_row(Text("time per step", "dim"), Text(times))
    for key in RESULT_PATHS:
        if result.get(key):
            grid.add_row(Text(key.removesuffix("_path"), "dim"), _plain(result[key]))
    return grid


def _t(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _plain(value: str | None) -> Text:
    """Text from dbspica as it is: controls escaped, never read as markup."""
    return Text(printable(value) or "-")


def _line_cells(line: CommandLine) -> list[str | Text]:
    return [
        str(line.number),
        Text(line.status, LINE_STYLES[line.status]),
        "" if line.exit_code is None else str(line.exit_code),
        "" if line.attempt is None else str(line.attempt),
        Text(printable(line.command) or "(on the node)", "" if line.command else "dim"),
    ]

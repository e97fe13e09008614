"""QFin, as on the seed's QFin interface: per runid the images received, with problems, QF
done and in progress; the selected runid's breakdowns by filter, node, grade, object,
exposure time and night; the QFin units running ("QF in progress"); a search over the
measured fields whose images are graded from here.

Each poll's snapshot makes the screen read its data again (through the core, in a worker:
:class:`~spica_tui.console.qfin_backend.QfinBackend`), the last search included, so a grade
shows once dbspica holds it. ``g`` grades the marked (or selected) images through the core,
audited as the console's operator (not offered read-only); ``t`` opens a QFin unit in the
stack detail screen, whose log tail comes from its node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Select, Static

from spica_core.errors import SpicaError
from spica_core.qfin.grading import COMMENTS
from spica_core.qfin.result import GRADES
from spica_core.read_model.images import NOT_GRADED, QF_STATES, ImageQuery, ImageRow, Range
from spica_core.read_model.qfin import BREAKDOWNS, NONE_LABEL, QfinView, RunidQfin
from spica_core.text import printable
from spica_tui.console.actions import BY_TEXTUAL, bindings
from spica_tui.console.grade_modal import GradeChoice, GradeImages
from spica_tui.console.panels.header import HeaderPanel
from spica_tui.console.panels.key_bar import KeyBar
from spica_tui.console.panels.line_table import Cell, GridTable, Row
from spica_tui.console.qfin_backend import SEARCH_LIMIT
from spica_tui.console.refresh import describe_failure
from spica_tui.console.screens.reading import ReadingScreen

if TYPE_CHECKING:
    from spica_tui.console.app import SpicaConsole

#: The runid selector's key for every runid at once.
ALL = ""
#: The searched ranges: (image field, form label).
RANGES = (
    ("seeing", "seeing"),
    ("airmass", "airmass"),
    ("background", "bkg"),
    ("exptime", "exptime"),
)
BREAKDOWN_TITLES = {
    "filter": "Filter",
    "node": "Node",
    "grade": "Grade",
    "object": "Object",
    "exptime": "ExpTime",
    "night": "Night",
}
MARK = "●"


class RunidTable(GridTable):
    """The runid selector: moving the cursor selects the runid whose page is shown."""

    class Selected(Message):
        def __init__(self, runid: str) -> None:
            super().__init__()
            self.runid = runid

    @property
    def selected(self) -> str | None:
        keys = self.row_keys
        return keys[self.cursor] if keys else None

    def cursor_moved(self) -> None:
        if self.selected is not None:
            self.tell(self.Selected(self.selected))


def _num(value: float | None, fmt: str = "{:g}") -> Text:
    """A figure right-aligned, ``-`` (dim) when unknown."""
    if value is None:
        return Text("-", "dim", justify="right")
    return Text(fmt.format(value), justify="right")


def _plain(value: str | None) -> Text:
    """Text from dbspica as it is: controls escaped, never read as markup."""
    return Text(printable(value) or "-", "" if value else "dim")


def summary_text(runid: str, f: RunidQfin | None) -> Text:
    """The seed's line: "Runid 04BF28: 201 images from data transfer, 3 images with
    problems, 196 QF images", with what runs and waits."""
    title = f"Runid {runid}" if runid else "All runids"
    if f is None:
        return Text(f"{title}: no image", "dim")
    text = Text.assemble((title, "bold"), f": {f.received} images from data transfer")
    if f.waiting:
        text.append(f" ({f.waiting} still in the repository)", "dim")
    text.append(", ")
    text.append(f"{f.problems} images with problems", "bold red" if f.problems else "")
    text.append(f", {f.done} QF images, ")
    text.append(f"{f.running} in progress", "bold yellow" if f.running else "")
    text.append(f", {f.queued} waiting for QFin")
    return text


class QfinScreen(ReadingScreen):
    SCOPE = "qfin"
    BINDINGS = bindings("qfin")
    DEFAULT_CSS = """
    QfinScreen #qfin-body { padding: 0 1; }
    QfinScreen .section { text-style: bold; color: $text-accent; margin-top: 1; }
    QfinScreen #summary { margin-top: 1; }
    QfinScreen GridTable { height: auto; max-height: 12; }
    QfinScreen #runids { max-height: 10; }
    QfinScreen #breakdowns { height: auto; }
    QfinScreen #breakdowns GridTable { width: 1fr; max-height: 10; margin-right: 1; }
    QfinScreen #results { max-height: 24; }
    QfinScreen #search-form, QfinScreen #search-choices { height: auto; }
    QfinScreen #search-form Input { width: 17; }
    QfinScreen #search-choices Select { width: 26; }
    QfinScreen #search-choices Button { min-width: 10; }
    """

    app: SpicaConsole

    def __init__(self) -> None:
        super().__init__()
        self.runid: str = ALL
        self.view: QfinView | None = None
        #: The last search asked for (run again with each poll) and what it found.
        self.search_query: ImageQuery | None = None
        self.results: list[ImageRow] = []
        self.marked: set[str] = set()
        #: The filters the filter choice offers now.
        self._filters: list[str] = []

    def compose(self) -> ComposeResult:
        yield HeaderPanel()
        with VerticalScroll(id="qfin-body"):
            yield Static(Text("reading dbspica…", "dim"), id="summary")
            yield Static("Qualityfits processed data", classes="section")
            yield RunidTable(
                "runid", "images", "placed", "in repository", "problems", "QF done", "in progress",
                "waiting QF", id="runids", zebra=True,
            )  # fmt: skip
            yield Static("Breakdown", classes="section", id="breakdown-title")
            with Horizontal(id="breakdowns"):
                for name in BREAKDOWNS:
                    yield GridTable(BREAKDOWN_TITLES[name], "images", id=f"bd-{name}")
            yield Static("QF in progress… (0)", classes="section", id="running-title")
            yield GridTable(
                "image", "runid", "filter", "object", "node", "partition", "unit", "started",
                "line", id="running",
            )  # fmt: skip
            yield Static("Search", classes="section", id="search-title")
            with Horizontal(id="search-form"):
                for field, label in RANGES:
                    yield Input(placeholder=f"{label} min", type="number", id=f"{field}-min")
                    yield Input(placeholder=f"{label} max", type="number", id=f"{field}-max")
            with Horizontal(id="search-choices"):
                yield Select[str]([], prompt="any filter", id="filter")
                yield Select[str](
                    [("not graded", NOT_GRADED), *((g, g) for g in GRADES)],
                    prompt="any grade",
                    id="grade",
                )
                yield Select[str]([(s, s) for s in QF_STATES], prompt="any QF state", id="qf")
                yield Button("Search", id="search", variant="primary")
            yield Static(Text("no search yet", "dim"), id="results-title")
            yield GridTable(
                " ", "image", "runid", "filter", "object", "exptime", "airmass", "seeing",
                "bkg", "sources", "proposal", "grade", "comment", "QF", "node",
                id="results", fixed_columns=2, zebra=True,
            )  # fmt: skip
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#runids", RunidTable).focus()
        super().on_mount()

    # -- data in

    async def read(self) -> None:
        """Read the page and the last search."""
        runid, query = self.runid, self.search_query
        try:
            view = await self.app.qfin.view(runid or None, self.app.clock())
            found = None if query is None else await self.app.qfin.search(query)
        except SpicaError as exc:
            self.app.notify(str(exc), title="QFin search", severity="error")
            return
        except Exception as exc:  # dbspica away: keep what is shown, say so
            self.query_one("#summary", Static).update(
                Text(f"QFin — not read: {describe_failure(exc)}", "bold red")
            )
            return
        self.show_view(view, found)

    def show_view(self, view: QfinView, found: list[ImageRow] | None) -> None:
        self.view = view
        with self.app.batch_update():
            self._show_runids(view)
            self._show_breakdowns(view)
            self._show_running(view)
            self._fill_filters(view)
            if found is not None:
                self._show_results(found)
        self.refresh_bindings()

    def _show_runids(self, view: QfinView) -> None:
        table = self.query_one("#runids", RunidTable)
        every = RunidQfin.total(view.runids)
        rows: list[Row] = []
        for key, f in ((ALL, every), *((r.runid, r) for r in view.runids)):
            if f is None:
                continue
            label = Text("all runids", "italic") if key == ALL else Text(key, "bold")
            figures = (f.received, f.placed, f.waiting, f.problems, f.done, f.running, f.queued)
            cells: list[Cell] = [label, *(_num(n) for n in figures)]
            if f.problems:
                cells[4] = Text(str(f.problems), "bold red", justify="right")
            rows.append((key, cells))
        table.set_rows(rows)
        keys = table.row_keys
        if self.runid not in keys:
            self.runid = ALL
        if keys and table.selected != self.runid:
            table.move_to(keys.index(self.runid))
        chosen = every if self.runid == ALL else view.runid(self.runid)
        self.query_one("#summary", Static).update(summary_text(self.runid, chosen))

    def _show_breakdowns(self, view: QfinView) -> None:
        which = f"runid {self.runid}" if self.runid else "all runids"
        self.query_one("#breakdown-title", Static).update(f"Breakdown of {which}")
        for name in BREAKDOWNS:
            counts = view.breakdowns.of(name)
            self.query_one(f"#bd-{name}", GridTable).set_rows(
                (value, [_plain(value), _num(n)]) for value, n in counts.items()
            )
        self.query_one("#bd-node").display = not self.app.backend.scope.hides_node_internals

    def _show_running(self, view: QfinView) -> None:
        self.query_one("#running-title", Static).update(f"QF in progress… ({len(view.running)})")
        self.query_one("#running", GridTable).set_rows(
            (
                r.unit,
                [
                    Text(printable(r.image), "bold"),
                    _plain(r.runid),
                    _plain(r.filter),
                    _plain(r.object),
                    _plain(r.node),
                    _plain(r.partition),
                    _plain(r.unit),
                    _plain(None if r.started_at is None else f"{r.started_at:%H:%M:%S}"),
                    Text(f"{r.progress + 1}/{r.lines}", justify="right"),
                ],
            )
            for r in view.running
        )

    def _fill_filters(self, view: QfinView) -> None:
        """The filter choice offers the filters of the runid shown."""
        filters = [f for f in view.breakdowns.of("filter") if f != NONE_LABEL]
        if filters == self._filters:
            return
        self._filters = filters
        select: Select[str] = self.query_one("#filter", Select)
        current = select.value
        select.set_options((f, f) for f in filters)
        if isinstance(current, str) and current in filters:
            select.value = current

    # -- the search

    def _range(self, field: str) -> Range:
        values: list[float | None] = []
        for end in ("min", "max"):
            raw = self.query_one(f"#{field}-{end}", Input).value.strip()
            try:
                values.append(float(raw) if raw else None)
            except ValueError:
                raise SpicaError(f"search: {field} {end} {raw!r} is not a number") from None
        return Range(*values).checked(field)

    def _choice(self, selector: str) -> str | None:
        value = self.query_one(selector, Select).value
        return value if isinstance(value, str) else None

    def build_query(self) -> ImageQuery:
        return ImageQuery(
            runid=self.runid or None,
            filter=self._choice("#filter"),
            grade=self._choice("#grade"),
            qf=self._choice("#qf"),
            seeing=self._range("seeing"),
            airmass=self._range("airmass"),
            background=self._range("background"),
            exptime=self._range("exptime"),
        )

    def search(self) -> None:
        try:
            self.search_query = self.build_query()
        except SpicaError as exc:
            self.app.notify(str(exc), title="QFin search", severity="warning")
            return
        self.query_one("#results-title", Static).update(Text("searching…", "dim"))
        self.load()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.search()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "search":
            event.stop()
            self.search()

    def _show_results(self, found: list[ImageRow]) -> None:
        self.results = found
        names = {r.image for r in found}
        self.marked &= names
        runid = self.search_query.runid if self.search_query is not None else None
        where = f"in {runid}" if runid else "in every runid"
        marks = f", {len(self.marked)} marked" if self.marked else ""
        first = "the first " if len(found) >= SEARCH_LIMIT else ""
        self.query_one("#results-title", Static).update(
            f"{first}{len(found)} image{'s' if len(found) != 1 else ''} found {where}{marks}"
        )
        self.query_one("#results", GridTable).set_rows(self._result_rows(found))

    def _result_rows(self, found: Sequence[ImageRow]) -> Iterable[Row]:
        for r in found:
            grade = r.grade or "-"
            yield (
                r.image,
                [
                    Text(MARK if r.image in self.marked else " ", "bold yellow"),
                    Text(printable(r.image), "bold"),
                    _plain(r.runid),
                    _plain(r.filter),
                    _plain(r.object),
                    _num(r.exptime),
                    _num(r.airmass, "{:.2f}"),
                    _num(r.seeing, "{:.2f}"),
                    _num(r.background, "{:.1f}"),
                    _num(r.sources),
                    _plain(r.proposal),
                    Text(grade, "bold" if r.grade else "dim"),
                    _plain(r.grade_comment),
                    _plain(r.qf_status),
                    _plain(r.node),
                ],
            )

    # -- what is offered

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        entry = BY_TEXTUAL.get(action)
        if entry is None or not entry.dangerous:
            return True
        return self.app.offers(entry.name, None) and self.app.backend.scope.everything

    # -- actions (names from the registry)

    def _selected_result(self) -> ImageRow | None:
        table = self.query_one("#results", GridTable)
        if not self.results or not table.row_count:
            return None
        key = table.row_keys[table.cursor]
        return next((r for r in self.results if r.image == key), None)

    def action_mark_image(self) -> None:
        row = self._selected_result()
        if row is None:
            self.app.notify("No image to mark: search first.", severity="warning")
            return
        self.marked ^= {row.image}
        self._show_results(self.results)
        self.query_one("#results", GridTable).action_move(1)

    def action_grade(self) -> None:
        if not self.check_action("grade", ()):
            self.app.notify("grade: read-only console", severity="warning")
            return
        row = self._selected_result()
        images = sorted(self.marked) or ([row.image] if row is not None else [])
        if not images:
            self.app.notify("No image to grade: search, then select or mark.", severity="warning")
            return
        proposal = row.proposal if row is not None and len(images) == 1 else None
        self.app.push_screen(
            GradeImages(
                images,
                COMMENTS,
                current={r.image: r.grade for r in self.results if r.image in images},
                proposal=proposal,
            ),
            callback=partial(self._graded, images),
        )

    def _graded(self, images: list[str], choice: GradeChoice | None) -> None:
        if choice is None:
            self.app.notify("Cancelled: nothing graded.", title="Grade")
            return

        async def apply() -> None:
            try:
                outcome = await self.app.qfin.grade(
                    images, choice.grade, comment=choice.comment, user=self.app.operator
                )
            except SpicaError as exc:
                self.app.notify(str(exc), title="Grade: refused", severity="error", timeout=20)
                return
            except Exception as exc:  # dbspica away
                self.app.notify(describe_failure(exc), title="Grade: failed", severity="error")
                return
            self.app.notify(
                f"{len(images)} image(s) graded {choice.grade}: {outcome}", title="Grade"
            )
            self.marked -= set(images)
            self.load()

        # Textual's WorkType union: mypy solves its ResultType as Never (not a wrong call).
        self.run_worker(apply, group="qfin-grade", exit_on_error=False)  # type: ignore[arg-type]

    def action_unit_log(self) -> None:
        running = self.query_one("#running", GridTable)
        if self.focused is running and running.row_count:
            self.app.open_stack(running.row_keys[running.cursor])
            return
        row = self._selected_result()
        if row is None:
            self.app.notify(
                "No image selected: select a unit running or an image found.", severity="warning"
            )
            return

        async def open_unit() -> None:
            try:
                units = await self.app.qfin.units([row.image])
            except Exception as exc:  # dbspica away
                self.app.notify(describe_failure(exc), severity="error")
                return
            unit = units.get(row.image)
            if unit is None:
                self.app.notify(f"{row.image}: no QFin unit yet", severity="warning")
            else:
                self.app.open_stack(unit)

        # Textual's WorkType union: mypy solves its ResultType as Never (not a wrong call).
        self.run_worker(open_unit, group="qfin-unit", exit_on_error=False)  # type: ignore[arg-type]

    def on_runid_table_selected(self, message: RunidTable.Selected) -> None:
        """Another runid: its page, and the search (if any) within it."""
        if message.runid != self.runid:
            self.runid = message.runid
            if self.search_query is not None:
                self.search_query = replace(self.search_query, runid=self.runid or None)
            self.load()

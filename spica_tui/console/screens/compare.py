"""Release comparison, as the seed's side-by-side table: for each tile, the two releases'
SCAMP and SWarp files, exposure, median seeing, completeness, SCAMP internal and external
RMS and median background, and the change; a tile stacked in one release only says so.

The releases offered are those with stacks (newest first); the newest is compared with the
one before it until the operator chooses, ``s`` swaps them. Each poll reads the comparison
again, so a stack recorded meanwhile shows.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Select, Static

from spica_core.read_model.compare import FIGURE_KEYS, ReleaseComparison, format_change
from spica_core.read_model.results import LABELS, format_figure
from spica_core.text import printable
from spica_tui.console.actions import bindings
from spica_tui.console.panels.header import HeaderPanel
from spica_tui.console.panels.key_bar import KeyBar
from spica_tui.console.panels.line_table import Cell, GridTable, Row
from spica_tui.console.panels.stacks import STATE_STYLES
from spica_tui.console.refresh import describe_failure
from spica_tui.console.screens.reading import ReadingScreen

PRESENCE_STYLE = {"release": "green", "against": "yellow"}


def comparison_rows(result: ReleaseComparison) -> list[Row]:
    """One row per tile and figure; the tile's name on its first row only."""
    rows: list[Row] = []
    for tile in result.tiles:
        sides = (tile.release, tile.against)
        stacks: list[Cell] = [
            Text("-", "dim") if s is None else Text(s.state, STATE_STYLES.get(s.state, ""))
            for s in sides
        ]
        note = ""
        if tile.presence != "both":
            only = result.release if tile.presence == "release" else result.against
            note = f"only in {only}"
        rows.append(
            (
                tile.tile,
                [
                    Text(printable(tile.tile), "bold"),
                    "state",
                    *stacks,
                    Text(note, PRESENCE_STYLE.get(tile.presence, "")),
                ],
            )
        )
        for key in FIGURE_KEYS:
            values = [format_figure(key, None if s is None else s.figures.get(key)) for s in sides]
            delta = tile.change(key)
            style = "" if delta is None or delta.difference == 0 else "bold"
            rows.append(
                (
                    f"{tile.tile}\t{key}",
                    [
                        "",
                        Text(LABELS[key], "dim"),
                        *(Text(v, justify="right") for v in values),
                        Text(format_change(key, delta), style, justify="right"),
                    ],
                )
            )
    return rows


class CompareScreen(ReadingScreen):
    SCOPE = "compare"
    BINDINGS = bindings("compare")
    DEFAULT_CSS = """
    CompareScreen #compare-body { padding: 0 1; }
    CompareScreen #compare-choices { height: auto; margin-top: 1; }
    CompareScreen #compare-choices Select { width: 24; }
    CompareScreen #compare-choices Static { width: auto; padding: 1 1; }
    CompareScreen #compare-summary { margin-top: 1; }
    CompareScreen #comparison { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.releases: list[str] = []
        self.comparison: ReleaseComparison | None = None

    def compose(self) -> ComposeResult:
        yield HeaderPanel()
        with Vertical(id="compare-body"):
            with Horizontal(id="compare-choices"):
                yield Static("Release")
                yield Select[str]([], prompt="release", id="release", allow_blank=True)
                yield Static("against")
                yield Select[str]([], prompt="against", id="against", allow_blank=True)
            yield Static(Text("reading dbspica…", "dim"), id="compare-summary")
            yield GridTable(
                "tile", "", "release", "against", "change", id="comparison", fixed_columns=2
            )
        yield KeyBar()

    def chosen(self) -> tuple[str | None, str | None]:
        """The two releases chosen (None: not chosen)."""
        release = self.query_one("#release", Select).value
        against = self.query_one("#against", Select).value
        return (
            release if isinstance(release, str) else None,
            against if isinstance(against, str) else None,
        )

    async def read(self) -> None:
        """Read the releases, then their comparison."""
        try:
            releases = await self.app.results.releases()
            self._offer(releases)
            release, against = self.chosen()
            found = None
            if release and against and release != against:
                found = await self.app.results.compare(release, against)
        except Exception as exc:  # dbspica away: keep what is shown, say so
            self.query_one("#compare-summary", Static).update(
                Text(f"Release comparison — not read: {describe_failure(exc)}", "bold red")
            )
            return
        self.show_comparison(found)

    def _offer(self, releases: list[str]) -> None:
        """The choices: releases with stacks; at first the newest against the one before."""
        if releases == self.releases:
            return
        first = not self.releases
        self.releases = releases
        options = [(r, r) for r in releases]
        with self.prevent(Select.Changed):
            for select_id, default in (("#release", 0), ("#against", 1)):
                select: Select[str] = self.query_one(select_id, Select)
                current = select.value
                select.set_options(options)
                if isinstance(current, str) and current in releases:
                    select.value = current
                elif first and len(releases) > default:
                    select.value = releases[default]

    def show_comparison(self, result: ReleaseComparison | None) -> None:
        self.comparison = result
        summary = self.query_one("#compare-summary", Static)
        table = self.query_one("#comparison", GridTable)
        if result is None:
            table.set_rows([])
            if len(self.releases) < 2:
                text = "Release comparison needs two releases with stacks"
                have = ", ".join(self.releases) or "none"
                summary.update(Text(f"{text} (dbspica has: {have})", "yellow"))
            else:
                summary.update(Text("Choose two different releases", "yellow"))
            return
        table.set_columns("tile", "", result.release, result.against, "change")
        table.set_rows(comparison_rows(result))
        only_new = sum(1 for t in result.tiles if t.presence == "release")
        only_old = sum(1 for t in result.tiles if t.presence == "against")
        summary.update(
            Text.assemble(
                (f"{result.release} against {result.against}", "bold"),
                f": {len(result.tiles)} tiles, {result.count('release')} stacks in "
                f"{result.release}, {result.count('against')} in {result.against}; "
                f"{only_new} only in {result.release}, {only_old} only in {result.against}",
            )
        )

    # -- the operator's choices

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.load()

    def action_swap_releases(self) -> None:
        release, against = self.chosen()
        if release is None or against is None:
            return
        with self.prevent(Select.Changed):
            self.query_one("#release", Select).value = against
            self.query_one("#against", Select).value = release
        self.load()

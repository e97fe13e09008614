"""Data mining: plots drawn in the terminal from dbspica (the seed's statistics pages).

* the seeing of the images QFin measured, per filter (a histogram of 0.1" bins);
* the completeness of each recorded stack against its seeing, per filter;
* the wall time the command lines took, per step (the tool a line runs) and per node.

The figures are summed in the database (:mod:`spica_core.read_model.mining`), read again at
each poll.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from spica_core.read_model.mining import SEEING_BIN, MiningView
from spica_tui.console.actions import bindings
from spica_tui.console.panels.header import HeaderPanel
from spica_tui.console.panels.key_bar import KeyBar
from spica_tui.console.refresh import describe_failure
from spica_tui.console.screens.reading import ReadingScreen

PLOTS = ("seeing", "completeness", "steps", "nodes")
#: A filter's points: x values, y values.
Series = tuple[list[float], list[float]]


def seeing_series(view: MiningView) -> dict[str, Series]:
    """Per filter, the bins' centres and their image counts."""
    out: dict[str, Series] = defaultdict(lambda: ([], []))
    for b in view.seeing:
        xs, ys = out[b.filter]
        xs.append(round(b.low + SEEING_BIN / 2, 6))
        ys.append(b.images)
    return dict(out)


def completeness_series(view: MiningView) -> dict[str, Series]:
    """Per filter, the stacks' seeing and completeness."""
    out: dict[str, Series] = defaultdict(lambda: ([], []))
    for p in view.completeness:
        xs, ys = out[p.filter or "-"]
        xs.append(p.seeing)
        ys.append(p.completeness)
    return dict(out)


def seconds_by(view: MiningView, what: str) -> dict[str, float]:
    """Wall seconds summed per step or per node (``what``), largest first."""
    totals: dict[str, float] = defaultdict(float)
    for s in view.steps:
        key = s.step if what == "step" else s.node
        if key is not None:
            totals[key] += s.seconds
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


class MiningScreen(ReadingScreen):
    SCOPE = "mining"
    BINDINGS = bindings("mining")
    DEFAULT_CSS = """
    MiningScreen #mining-body { padding: 0 1; }
    MiningScreen #mining-summary { margin: 1 0; height: auto; }
    MiningScreen #plots { grid-size: 2 2; grid-gutter: 1 2; height: 1fr; }
    MiningScreen PlotextPlot { min-height: 10; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.view: MiningView | None = None

    def compose(self) -> ComposeResult:
        yield HeaderPanel()
        with Vertical(id="mining-body"):
            yield Static(Text("reading dbspica…", "dim"), id="mining-summary")
            with Grid(id="plots"):
                for name in PLOTS:
                    yield PlotextPlot(id=f"plot-{name}")
        yield KeyBar()

    async def read(self) -> None:
        try:
            view = await self.app.results.mining()
        except Exception as exc:  # dbspica away: keep what is shown, say so
            self.query_one("#mining-summary", Static).update(
                Text(f"Data mining — not read: {describe_failure(exc)}", "bold red")
            )
            return
        self.show_view(view)

    def show_view(self, view: MiningView) -> None:
        self.view = view
        images = sum(b.images for b in view.seeing)
        runs = sum(s.runs for s in view.steps)
        self.query_one("#mining-summary", Static).update(
            f"{images} images measured by QFin, {len(view.completeness)} stacks with "
            f"completeness and seeing, {runs} command lines run"
        )
        self._series(
            "seeing", "Seeing of the QFin images per filter", "images", seeing_series(view)
        )
        self._series(
            "completeness",
            "Completeness (80 %) against seeing, per stack",
            "mag",
            completeness_series(view),
            points=True,
        )
        self._bars("steps", "Wall time per step (s)", seconds_by(view, "step"))
        hidden = self.app.backend.scope.hides_node_internals
        title = "Wall time per node (s)" + (": not shown in this scope" if hidden else "")
        self._bars("nodes", title, {} if hidden else seconds_by(view, "node"))

    def _plot(self, name: str) -> PlotextPlot:
        plot = self.query_one(f"#plot-{name}", PlotextPlot)
        plot.plt.clear_figure()
        return plot

    def _series(
        self,
        name: str,
        title: str,
        ylabel: str,
        series: Mapping[str, Series],
        *,
        points: bool = False,
    ) -> None:
        """One curve (or cloud of ``points``) per filter, seeing along x."""
        plot = self._plot(name)
        plt = plot.plt
        draw = plt.scatter if points else plt.plot
        for flt, (xs, ys) in sorted(series.items()):
            draw(xs, ys, label=flt, marker="hd")
        plt.title(title)
        plt.xlabel('seeing (")')
        plt.ylabel(ylabel)
        plot.refresh()

    def _bars(self, name: str, title: str, totals: dict[str, float]) -> None:
        plot = self._plot(name)
        plt = plot.plt
        if totals:
            plt.bar(list(totals), [round(v, 1) for v in totals.values()], orientation="horizontal")
        plt.title(title)
        plot.refresh()

"""``spica compare``: two releases' stacks side by side, tile by tile (the seed's table)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from spica_tui.cli.context import state
from spica_tui.cli.output import emit_json, stdout, table

if TYPE_CHECKING:
    from spica_core.read_model.compare import ReleaseComparison


def compare(
    ctx: typer.Context,
    release: Annotated[str, typer.Option("--release", "-r", help="Release, e.g. T0003.")],
    against: Annotated[
        str, typer.Option("--against", "-a", help="Release compared with, e.g. T0002.")
    ],
    survey: Annotated[str | None, typer.Option(help="Survey, e.g. W.")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help="Filter, e.g. u.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare the stacks of two releases tile by tile: SCAMP and SWarp files, exposure,
    median seeing, completeness, SCAMP internal and external RMS, background, and the change.
    Exit 1 when either release has no stacks."""
    from spica_core.read_model.compare import compare_releases

    result = compare_releases(state(ctx).engine(), release, against, survey=survey, filter=filter_)
    if as_json:
        emit_json(result.to_json())
        return
    print_comparison(result)


def print_comparison(result: ReleaseComparison) -> None:
    """One table per tile: the seed's figures of both releases side by side, and the
    change."""
    from spica_core.read_model.compare import FIGURE_KEYS, format_change
    from spica_core.read_model.results import LABELS, format_figure
    from spica_core.text import printable

    for tile in result.tiles:
        t = table("", result.release, result.against, "change", title=printable(tile.tile))
        sides = (tile.release, tile.against)
        t.add_row(
            "state",
            *(Text("-") if s is None else Text(s.state) for s in sides),
            Text(f"only in {result.release if sides[0] else result.against}", "yellow")
            if tile.presence != "both"
            else "",
        )
        for key in FIGURE_KEYS:
            t.add_row(
                LABELS[key],
                *(format_figure(key, None if s is None else s.figures.get(key)) for s in sides),
                format_change(key, tile.change(key)),
            )
        stdout.print(t)
    stdout.print(
        f"{len(result.tiles)} tile(s): {result.count('release')} in {result.release}, "
        f"{result.count('against')} in {result.against}",
        style="dim",
    )


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)

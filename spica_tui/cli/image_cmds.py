"""``spica images`` (images with their QFin figures and grades) and ``spica grade`` (the
operator's grade, audited).

``spica grade`` validates the whole request first (image names, grade, comment): a refused
request changes nothing and exits 2. Regrading an image that already has another grade shows
before -> after and asks unless ``--yes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from spica_tui.cli.context import state
from spica_tui.cli.ops_cmds import (
    AsOpt,
    DryRunOpt,
    FilterOpt,
    NodeOpt,
    RunidOpt,
    YesOpt,
    confirm_apply,
)
from spica_tui.cli.output import emit_json, note, stdout, table
from spica_tui.cli.report_cmds import JsonOpt, LimitOpt

if TYPE_CHECKING:
    from spica_core.qfin.grading import GradeOutcome
    from spica_core.read_model import ImageRow


def _range_option(what: str) -> Any:
    return typer.Option(metavar="MIN:MAX", help=f"{what} range: MIN:MAX, MIN: or :MAX.")


def grade(
    ctx: typer.Context,
    images: Annotated[
        list[str], typer.Argument(metavar="IMAGE", help="Image names.", show_default=False)
    ],
    wanted: Annotated[
        str, typer.Argument(metavar="GRADE", help="A, B, C or D.", show_default=False)
    ],
    comment: Annotated[
        str | None,
        typer.Option(
            "--comment",
            help='Why: one of the seed\'s comments ("Poor seeing (>1.2)", "Defocus?"…) or a '
            "line of free text.",
        ),
    ] = None,
    as_user: AsOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Grade images A-D (the operator's grade; QFin only proposes one). Audited."""
    from spica_core.operations import operator_name
    from spica_core.qfin.grading import grade_images, preview_grades

    user = operator_name(as_user)
    engine = state(ctx).engine()
    if not dry_run:
        preview = preview_grades(engine, images, wanted, comment=comment, user=user)
        if preview.regraded and not yes:
            note(f"{len(preview.regraded)} image(s) already graded:")
            regraded = {i.image for i in preview.regraded}
            for image, line in zip(preview.images, preview.plan_lines(), strict=True):
                if image.image in regraded:
                    note(f"  {line}")
            confirm_apply(yes, dry_run)
    outcome = grade_images(engine, images, wanted, comment=comment, user=user, dry_run=dry_run)
    _print_outcome(outcome, as_json)


def _print_outcome(outcome: GradeOutcome, as_json: bool) -> None:
    if as_json:
        emit_json(outcome.to_json())
        return
    verb = "graded" if outcome.applied else "would grade"
    for line in outcome.plan_lines():
        stdout.print(f"{verb} {line}", markup=False)
    stdout.print(f"{len(outcome.images)} image(s) {verb} {outcome.grade}", style="dim")


def images(
    ctx: typer.Context,
    runid: RunidOpt = None,
    filter_: FilterOpt = None,
    grade_: Annotated[
        str | None,
        typer.Option("--grade", help="A, B, C, D, or none (not graded).", metavar="GRADE"),
    ] = None,
    qf: Annotated[
        str | None,
        typer.Option(
            "--qf", help="QFin state: new, planned, running, done, failed.", metavar="STATE"
        ),
    ] = None,
    node: NodeOpt = None,
    object_: Annotated[str | None, typer.Option("--object", help="Object / field.")] = None,
    match: Annotated[
        str | None, typer.Option("--match", "-m", help="Regex searched in the image name.")
    ] = None,
    seeing: Annotated[str | None, _range_option("Seeing (arcsec)")] = None,
    airmass: Annotated[str | None, _range_option("Airmass")] = None,
    background: Annotated[str | None, _range_option("Background (ADU)")] = None,
    exptime: Annotated[str | None, _range_option("Exposure time (s)")] = None,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Images with their QFin figures, proposed and operator grades, by runid then name."""
    from spica_core.read_model import ImageQuery, Range, list_images

    def parsed(text: str | None, option: str) -> Range:
        return Range() if text is None else Range.parse(text, option)

    query = ImageQuery(
        runid=runid,
        filter=filter_,
        grade=grade_.upper() if grade_ is not None and grade_ != "none" else grade_,
        qf=qf,
        node=node,
        object=object_,
        match=match,
        seeing=parsed(seeing, "--seeing"),
        airmass=parsed(airmass, "--airmass"),
        background=parsed(background, "--background"),
        exptime=parsed(exptime, "--exptime"),
    )
    rows = list_images(state(ctx).engine(), query, limit)
    if as_json:
        emit_json([r.to_json() for r in rows])
        return
    _print_images(rows)


def _print_images(rows: list[ImageRow]) -> None:
    t = table(
        "image",
        "runid",
        "filter",
        "object",
        "exptime",
        "airmass",
        "seeing",
        "background",
        "sources",
        "proposal",
        "grade",
        "qf status",
        "node",
    )
    for r in rows:
        t.add_row(
            r.image,
            r.runid or "-",
            r.filter or "-",
            r.object or "-",
            _figure(r.exptime, ".2f"),
            _figure(r.airmass, ".3f"),
            _figure(r.seeing, ".2f"),
            _figure(r.background, ".1f"),
            "-" if r.sources is None else str(r.sources),
            r.proposal or "-",
            r.grade or "-",
            r.qf_status,
            r.node or "-",
        )
    stdout.print(t)
    stdout.print(f"{len(rows)} image(s)", style="dim")


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def register(app: typer.Typer) -> None:
    app.command("images")(images)
    app.command("grade")(grade)

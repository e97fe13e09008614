"""``spica qfin``: QFin units — plan (and launch) one per image on a node; ``record`` and
``maps``, which the units' own command lines call on the node.

Thin: :mod:`spica_core.qfin.plan` plans and writes, :mod:`spica_core.qfin.record` writes an
image's results. Exit codes: 0 done; 1 an image unknown, a unit not added or not launched,
a QFin that failed (``record``); 2 usage or configuration error; 3 dbspica or a node
unreachable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from spica_tui.cli.context import state
from spica_tui.cli.output import check_launch, emit_json, finish_plan, note, stdout, table

if TYPE_CHECKING:
    from spica_core.qfin.plan import QfinPlan
    from spica_core.qfin.record import RecordTarget

#: Its help is the callback's: what ``spica qfin`` alone does.
app = typer.Typer(invoke_without_command=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


@app.callback()
def qfin(
    ctx: typer.Context,
    runid: Annotated[
        str | None, typer.Option("--runid", metavar="RUNID", help="Only this runid's images.")
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", "-n", metavar="NODE", help="Only images on NODE.")
    ] = None,
    images: Annotated[
        list[str] | None,
        typer.Option("--image", metavar="NAME", help="Only these images (repeatable)."),
    ] = None,
    launch: Annotated[
        bool, typer.Option("--launch", help="Launch the units planned (audited, as launch).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the units; write nothing anywhere.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Plan one QFin unit (step qfin, named IMAGE_qfin_RELEASE) per image placed on a node
    that has none for the current release, on that node; with --launch, queue them.

    Images without a node, or with a unit already, are skipped and said why: running it
    again plans only what is new. Exit codes: 0 done; 1 an unknown image, or a unit not
    added or not launched; 2 usage; 3 dbspica or a node unreachable.
    """
    if ctx.invoked_subcommand is not None:
        return
    from spica_core.qfin.plan import QfinQuery, apply_qfin, plan_qfin

    check_launch(launch=launch, dry_run=dry_run)
    st = state(ctx)
    engine = st.engine()
    query = QfinQuery(runid=runid, node=node, images=tuple(images or ()))
    plan = plan_qfin(engine, st.config, query)
    if not dry_run:  # nothing new: nothing written, and said so as a real run
        plan = apply_qfin(engine, st.config, plan, launch=launch)
    finish_plan(plan, _print_plan, as_json=as_json)


def _print_plan(plan: QfinPlan) -> None:
    if plan.units:
        t = table("unit", "node", "partition", "runid", "filter", "state", "workdir")
        for unit in plan.units:
            t.add_row(
                unit.unit,
                unit.node,
                unit.partition,
                unit.runid or "",
                unit.filter or "",
                "would plan" if plan.dry_run else unit.state,
                unit.workdir,
            )
        stdout.print(t)
    for unit in plan.units:
        if unit.error:
            note(f"{unit.unit}: not added: {unit.error}")
    for name, why in plan.not_launched:
        note(f"{name}: added but not launched: {why}")
    for skipped in plan.skipped:
        note(f"{skipped.image}: skipped: {skipped.reason}")
    verb = "would plan" if plan.dry_run else "planned"
    added = sum(1 for u in plan.units if u.error is None)
    launched = sum(1 for u in plan.units if u.state == "pending")
    tail = f", {launched} launched" if plan.launch else ""
    note(
        f"release {plan.release}: {verb} {added if not plan.dry_run else len(plan.units)} "
        f"QFin unit(s){tail}, {len(plan.skipped)} image(s) skipped"
    )


ImageArg = Annotated[str, typer.Argument(metavar="IMAGE", help="The image (e.g. 811001p).")]
ImagePathOpt = Annotated[
    str, typer.Option("--image-path", metavar="PATH", help="The image's file on this node.")
]
WorkdirOpt = Annotated[
    str, typer.Option("--workdir", metavar="DIR", help="The unit's output directory.")
]


def _target(image: str, workdir: str, release: str, image_path: str) -> RecordTarget:
    """The image of a unit's line; the unit and node from the daemon's environment."""
    import os
    from pathlib import Path

    from spica_core.qfin.record import RecordTarget

    return RecordTarget(
        image=image,
        workdir=Path(workdir),
        release=release,
        image_path=Path(image_path),
        stack=os.environ.get("SPICA_STACK") or None,
        node=os.environ.get("SPICA_NODE") or None,
    ).checked()


@app.command("maps")
def maps(
    ctx: typer.Context, image: ImageArg, image_path: ImagePathOpt, workdir: WorkdirOpt
) -> None:
    """First line of a QFin unit: check the image (readable, whole, no CCD all zeros, a
    WCS on every CCD) and write its weight and flag maps in the work directory.

    A broken image is recorded as failed in dbspica (image and problem row) and the command
    exits 1 with the reason, so the daemon fails the unit at this line.
    """
    from pathlib import Path

    from spica_core.names import validate_name
    from spica_core.qfin.maps import write_maps
    from spica_core.qfin.measure import QfinFailed

    # Every unit runs this line: dbspica, its models and the config are loaded only when
    # there is a failure to record.
    validate_name(image, "image")
    try:
        written = write_maps(Path(image_path), Path(workdir), image=image)
    except QfinFailed as exc:
        from spica_core.qfin.record import fail_image

        st = state(ctx)
        target = _target(image, workdir, st.config.release.name, image_path)
        fail_image(st.engine, target, exc)  # dbspica down: the image's failure still stands
        raise
    note(f"{image}: weight {written.weight}, flag {written.flag}")


@app.command("record")
def record(
    ctx: typer.Context,
    image: ImageArg,
    workdir: WorkdirOpt,
    release: Annotated[str, typer.Option("--release", metavar="RELEASE", help="The release.")],
    image_path: ImagePathOpt,
    as_json: JsonOpt = False,
) -> None:
    """Last line of a QFin unit: read source-extractor's and PSFEx's outputs, grade, write
    the report beside them and the image's results in dbspica (one transaction).

    A broken image or unusable outputs: the image is recorded as failed (with a problem
    row), the reason goes to stderr and the exit code is 1.
    """
    import msgspec

    from spica_core.qfin.record import record_qfin

    st = state(ctx)
    report = record_qfin(st.engine(), st.config, _target(image, workdir, release, image_path))
    if as_json:
        emit_json(msgspec.to_builtins(report))
        return
    figures = report.figures
    seeing = f'{figures.seeing:.2f}"' if figures.seeing is not None else "not measured"
    note(
        f"{image}: seeing {seeing}, {figures.sources} sources, {figures.psf_stars} PSF stars, "
        f"{len(figures.ccds)}/{figures.ccds_expected} CCDs; proposed grade "
        f"{report.proposal.grade}"
    )


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="qfin")

"""``spica qfin``: QFin units — plan (and launch) one per image on a node.

Thin: :mod:`spica_core.qfin.plan` plans and writes. Exit codes: 0 done; 1 an image
unknown, a unit not added or not launched; 2 usage or configuration error; 3 dbspica or a
node unreachable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from spica_tui.cli.context import state
from spica_tui.cli.output import emit_json, note, stdout, table

if TYPE_CHECKING:
    from spica_core.qfin.plan import QfinPlan

app = typer.Typer(
    help="QFin: per-image quality units (source-extractor, psfex, record) on the nodes.",
    invoke_without_command=True,
)

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
    from spica_core.errors import UsageError
    from spica_core.qfin.plan import QfinQuery, apply_qfin, plan_qfin

    if launch and dry_run:
        raise UsageError("--launch and --dry-run exclude each other")
    st = state(ctx)
    engine = st.engine()
    query = QfinQuery(runid=runid, node=node, images=tuple(images or ()))
    plan = plan_qfin(engine, st.config, query)
    if not dry_run:  # nothing new: nothing written, and said so as a real run
        plan = apply_qfin(engine, st.config, plan, launch=launch)
    if as_json:
        emit_json(plan.to_json())
    else:
        _print_plan(plan)
    if not plan.ok:
        raise typer.Exit(1)


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


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="qfin")

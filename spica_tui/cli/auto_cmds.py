"""``spica auto``: plan (and launch) the stack units of a stacking release.

Thin: :mod:`spica_core.auto.plan` plans, :mod:`spica_core.auto.apply` copies and adds.
Exit codes: 0 done; 1 a unit whose inputs changed (reported, not rewritten), a unit not
added or not launched; 2 usage or configuration (a frozen release whose settings changed);
3 dbspica unreachable, or a node while the units' files were copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from spica_tui.cli.context import state
from spica_tui.cli.output import check_launch, finish_plan, note, stdout, table

if TYPE_CHECKING:
    from spica_core.auto.plan import AutoPlan

#: Refused images listed one by one up to this many (the rest counted by reason).
SHOWN_REFUSALS = 20


def auto(
    ctx: typer.Context,
    release: Annotated[
        str | None,
        typer.Option("--release", "-r", metavar="RELEASE", help="The release (default: last)."),
    ] = None,
    survey: Annotated[
        str | None,
        typer.Option("--survey", metavar="SURVEY", help="The grid's survey, or one field."),
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option("--filter", "-f", metavar="FILTER", help="One filter (letter or name)."),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option("--mode", metavar="stack|image", help="Co-adds on tiles, or per image."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the units; write nothing anywhere.")
    ] = False,
    launch: Annotated[
        bool, typer.Option("--launch", help="Launch the units added (audited, as launch).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Plan the stack units of a stacking release: the graded exposures its rules accept,
    grouped by tile and filter (or one unit per exposure in image mode), each on the node
    holding most of its input bytes; with --launch, queue them.

    Inputs on other nodes are copied (checksums verified). Units planned before are
    skipped; one whose inputs changed is reported and never rewritten (remove it first).
    Exit codes: 0 done; 1 changed units, or a unit not added or not launched; 2 usage or
    configuration (a frozen release whose settings changed); 3 dbspica unreachable, or a
    node while the units' files were copied.
    """
    from spica_core.auto.apply import apply_auto
    from spica_core.auto.plan import AutoQuery, plan_auto
    from spica_core.errors import UsageError

    check_launch(launch=launch, dry_run=dry_run)
    if mode not in (None, "stack", "image"):
        raise UsageError(f"--mode {mode}: stack or image")
    st = state(ctx)
    engine = st.engine()
    query = AutoQuery(release, survey, filter, "image" if mode == "image" else
                      "stack" if mode == "stack" else None)  # fmt: skip
    plan = plan_auto(engine, st.config, query)
    if not dry_run:
        plan = apply_auto(engine, st.config, plan, launch=launch)
    finish_plan(plan, _print_plan, as_json=as_json, unreachable=plan.unreachable)


def _print_plan(plan: AutoPlan) -> None:
    if plan.units:
        t = table("stack", "node", "filter", "scamp", "swarp", "copies", "state")
        for unit in plan.units:
            t.add_row(
                unit.name,
                unit.node,
                unit.unit.filter or "",
                str(len(unit.unit.scamp_inputs)),
                str(len(unit.unit.swarp_inputs)),
                str(len(unit.copies)),
                "would plan" if plan.dry_run else unit.state,
            )
        stdout.print(t)
    for unit in plan.units:
        if unit.error:
            note(f"{unit.name}: not added: {unit.error}")
    for name, why in plan.unplanned:
        note(f"{name}: cannot be planned: {why}")
    for name, why in plan.not_launched:
        note(f"{name}: added but not launched: {why}")
    for changed in plan.changed:
        note(f"{changed.stack} ({changed.state}): {changed.message}")
    reasons: dict[str, int] = {}
    for i, refused in enumerate(plan.refused):
        if i < SHOWN_REFUSALS:
            note(f"{refused.image}: refused: {refused.reason}")
        else:
            key = refused.reason.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
    for reason, count in sorted(reasons.items()):
        note(f"… and {count} more refused: {reason}")
    verb = "would plan" if plan.dry_run else "planned"
    added = len(plan.units) if plan.dry_run else sum(1 for u in plan.units if u.error is None)
    launched = sum(1 for u in plan.units if u.state == "pending")
    tail = f", {launched} launched" if plan.launch else ""
    note(
        f"release {plan.release} ({plan.mode}): {verb} {added} unit(s){tail}, "
        f"{len(plan.existing)} planned before, {len(plan.changed)} changed, "
        f"{len(plan.refused)} image(s) refused"
    )


def register(parent: typer.Typer) -> None:
    parent.command("auto")(auto)

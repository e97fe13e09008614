"""``spica launch | requeue | unlock | remove | audit``: operator actions for scripts.

Thin: build the request, let spica_core.operations plan it, show the plan (the same text as
``--dry-run`` and the console's modal), ask unless ``--yes``, apply, report per stack.
Exit codes: 0 all applied; 1 any stack refused or failed; 2 usage (bad name or filter, or no
terminal to confirm on and no ``--yes``); 3 dbspica or a stack's node unreachable.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spica_tui.cli.context import CliState, state
from spica_tui.cli.output import emit_json, note, stdout, table
from spica_tui.cli.report_cmds import LimitOpt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spica_core.operations import ItemResult, OperationRequest, Plan, Selection
    from spica_core.operations.reconcile import Drift, FixResult

Names = Annotated[list[str] | None, typer.Argument(help="Stack names.", show_default=False)]
StateOpt = Annotated[str | None, typer.Option("--state", "-s", help="Filter: state.")]
NodeOpt = Annotated[str | None, typer.Option("--node", "-n", help="Filter: node.")]
StepOpt = Annotated[str | None, typer.Option("--step", help="Filter: step.")]
RunidOpt = Annotated[str | None, typer.Option("--runid", help="Filter: runid.")]
FilterOpt = Annotated[str | None, typer.Option("--filter", help="Filter: filter (u, g, r…).")]
ReleaseOpt = Annotated[str | None, typer.Option("--release", help="Filter: release.")]
MatchOpt = Annotated[
    str | None, typer.Option("--match", "-m", help="Filter: regex on the name and error.")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan, change nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Plan and per-stack results as JSON.")]
AsOpt = Annotated[str | None, typer.Option("--as", help="Operator name for the audit.")]

STATES = ("planned", "pending", "running", "completed", "failed")


def _selection(
    names: list[str] | None,
    state_: str | None,
    node: str | None,
    step: str | None,
    runid: str | None,
    filter_: str | None,
    release: str | None,
    match: str | None,
) -> Selection:
    from spica_core.errors import UsageError
    from spica_core.names import validate_name
    from spica_core.operations import Selection
    from spica_core.read_model import StackSelection
    from spica_core.states import StackState

    for name in names or []:
        validate_name(name, "stack")
    if state_ is not None and state_ not in STATES:
        raise UsageError(f"--state {state_!r}: expected one of {', '.join(STATES)}")
    flt = None
    if any(v is not None for v in (state_, node, step, runid, filter_, release, match)):
        flt = StackSelection(
            state=StackState(state_) if state_ else None,
            node=node,
            step=step,
            runid=runid,
            filter=filter_,
            release=release,
            match=match,
        )
    return Selection(tuple(names or ()), flt)


def confirm_apply(yes: bool, dry_run: bool) -> None:
    """Ask "Apply?" on the terminal unless --yes or --dry-run (every operator action's rule);
    no terminal is a usage error, a no exits 1 with nothing changed."""
    from spica_core.errors import UsageError

    if yes or dry_run:
        return
    if not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on: pass --yes to apply (or --dry-run)")
    if not typer.confirm("Apply?", default=False, err=True):
        note("nothing changed")
        raise typer.Exit(1)


def _run(st: CliState, request: OperationRequest, dry_run: bool, yes: bool, as_json: bool) -> None:
    import asyncio

    from spica_core.executor.agents import AgentExecutor
    from spica_core.operations import Operations, exit_code
    from spica_core.text import printable

    engine = st.engine()

    async def go() -> tuple[Plan, list[ItemResult] | None]:
        async with AgentExecutor.over_ssh(st.config) as executor:
            ops = Operations(st.config, engine, executor)
            plan = await ops.plan(request)
            if dry_run:
                ops.record_dry_run(plan)
                return plan, None
            if not plan.doable:
                return plan, await ops.apply(plan)
            if not as_json or not yes:
                note(plan.render())
            confirm_apply(yes, dry_run)

            def show(r: ItemResult) -> None:
                if not as_json:
                    mark = "ok" if r.ok else r.outcome.value
                    note(f"{r.stack}: {mark}: {r.message}")

            return plan, await ops.apply(plan, show)

    plan, results = asyncio.run(go())
    if dry_run:
        if as_json:
            emit_json({"action": request.action.value, "dry_run": True, "plan": plan.to_json()})
        else:
            typer.echo(printable(plan.render(), lines=True))
        codes = [3 if i.unreachable else 1 for i in plan.refused]
        raise typer.Exit(max(codes, default=0) if plan.refused else 0)
    assert results is not None
    if as_json:
        emit_json(
            {
                "action": request.action.value,
                "dry_run": False,
                "plan": plan.to_json(),
                "results": [r.to_json() for r in results],
            }
        )
    elif not plan.doable:
        note(plan.render())
    code = exit_code(results)
    if code:
        raise typer.Exit(code)


def _request(action: str, sel: Selection, as_user: str | None, **kw: Any) -> OperationRequest:
    from spica_core.operations import OpAction, OperationRequest, operator_name

    return OperationRequest(OpAction(action), sel, operator_name(as_user), **kw)


def launch(
    ctx: typer.Context,
    names: Names = None,
    state_: StateOpt = None,
    node: NodeOpt = None,
    step: StepOpt = None,
    runid: RunidOpt = None,
    filter_: FilterOpt = None,
    release: ReleaseOpt = None,
    match: MatchOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
    as_user: AsOpt = None,
) -> None:
    """Queue planned stacks on their nodes (planned -> pending)."""
    sel = _selection(names, state_, node, step, runid, filter_, release, match)
    _run(state(ctx), _request("launch", sel, as_user), dry_run, yes, as_json)


def requeue(
    ctx: typer.Context,
    names: Names = None,
    state_: StateOpt = None,
    node: NodeOpt = None,
    step: StepOpt = None,
    runid: RunidOpt = None,
    filter_: FilterOpt = None,
    release: ReleaseOpt = None,
    match: MatchOpt = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Run from line 1, not from the failed line.")
    ] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
    as_user: AsOpt = None,
) -> None:
    """Requeue failed stacks (.error -> .spica); they resume at the failed line."""
    sel = _selection(names, state_, node, step, runid, filter_, release, match)
    _run(
        state(ctx), _request("requeue", sel, as_user, from_start=from_start), dry_run, yes, as_json
    )


def unlock(
    ctx: typer.Context,
    names: Names = None,
    state_: StateOpt = None,
    node: NodeOpt = None,
    step: StepOpt = None,
    runid: RunidOpt = None,
    filter_: FilterOpt = None,
    release: ReleaseOpt = None,
    match: MatchOpt = None,
    requeue_: Annotated[
        bool, typer.Option("--requeue", help="To pending (resumable) instead of failed.")
    ] = False,
    qfin: Annotated[
        str | None,
        typer.Option(
            "--qfin",
            metavar="PARTITION",
            help="Remove this partition's QFin lock (with --node) when its holder is gone.",
        ),
    ] = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
    as_user: AsOpt = None,
) -> None:
    """Unlock stale running stacks (daemon dead, pid gone, node rebooted)."""
    if qfin is not None:
        _unlock_qfin(state(ctx), node, qfin, as_user, dry_run, yes, as_json)
        return
    sel = _selection(names, state_, node, step, runid, filter_, release, match)
    _run(state(ctx), _request("unlock", sel, as_user, requeue=requeue_), dry_run, yes, as_json)


def _unlock_qfin(
    st: CliState,
    node: str | None,
    partition: str,
    as_user: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    import asyncio

    import msgspec

    from spica_core.errors import UsageError
    from spica_core.executor import ProtocolError
    from spica_core.executor.agents import AgentExecutor
    from spica_core.operations import Operations, operator_name
    from spica_core.operations.session import unlock_qfin

    if node is None:
        raise UsageError("--qfin needs --node NODE")
    user = operator_name(as_user)
    engine = st.engine()

    async def go(dry: bool) -> Any:
        async with AgentExecutor.over_ssh(st.config, nodes=[node]) as executor:
            return msgspec.to_builtins(
                await unlock_qfin(
                    Operations(st.config, engine, executor), node, partition, user, dry_run=dry
                )
            )

    try:
        plan = asyncio.run(go(True))
        if not dry_run:
            note(f"delete locks/{partition}.qfin.lock on {node} (holder: {plan.get('holder')})")
            confirm_apply(yes, dry_run)
            plan = asyncio.run(go(False))
    except ProtocolError as exc:
        from spica_tui.cli.output import error

        error(f"node {node}: {exc.message}")
        raise typer.Exit(1) from None
    if as_json:
        emit_json(plan)
    else:
        stdout.print(
            f"{'would delete' if dry_run else 'deleted'} locks/{partition}.qfin.lock on {node}"
        )


def remove(
    ctx: typer.Context,
    names: Names = None,
    state_: StateOpt = None,
    node: NodeOpt = None,
    step: StepOpt = None,
    runid: RunidOpt = None,
    filter_: FilterOpt = None,
    release: ReleaseOpt = None,
    match: MatchOpt = None,
    purge_inputs: Annotated[
        bool, typer.Option("--purge-inputs", help="Also delete input files (never raw exposures).")
    ] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
    as_user: AsOpt = None,
) -> None:
    """Remove stacks: dbspica rows, queue file, commands, logs and outputs (not running)."""
    sel = _selection(names, state_, node, step, runid, filter_, release, match)
    _run(
        state(ctx),
        _request("remove", sel, as_user, purge_inputs=purge_inputs),
        dry_run,
        yes,
        as_json,
    )


def audit(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Only newer: 2h, 3d or an ISO time.")] = None,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Operator actions, newest first: who, when, what, on which stacks, and the result."""
    from spica_core.operations.audit import list_actions
    from spica_core.reports import parse_since

    rows = list_actions(state(ctx).engine(), parse_since(since) if since else None, limit)
    if as_json:
        emit_json(rows)
        return
    t = table("time", "user", "action", "result", "targets", "message")
    for r in rows:
        targets = ", ".join(r["targets"][:3]) + (" …" if len(r["targets"]) > 3 else "")
        t.add_row(
            r["time"],
            r["user"],
            r["action"] + (" (dry run)" if r["dry_run"] else ""),
            r["result"],
            targets,
            r["message"] or "",
        )
    stdout.print(t)


def register(app: typer.Typer) -> None:
    for fn in (launch, requeue, unlock, remove):
        app.command(fn.__name__)(fn)
    app.command("audit")(audit)
    app.command("reconcile")(reconcile)


def reconcile(
    ctx: typer.Context,
    fix: Annotated[bool, typer.Option("--fix", help="Apply the fixes (audited).")] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
    as_user: AsOpt = None,
) -> None:
    """Find drift between dbspica and the nodes, and print the fix for each; --fix applies.

    Exit code 0 when nothing drifts (or everything was fixed), 1 when drift remains, 3 when
    a node could not be checked (reported as ``node-unchecked``).
    """
    import asyncio

    from spica_core.executor.agents import AgentExecutor
    from spica_core.operations import operator_name
    from spica_core.operations.reconcile import exit_code, find_drift, fix_drift

    st = state(ctx)
    engine = st.engine()
    user = operator_name(as_user)

    async def go() -> tuple[list[Drift], list[FixResult] | None]:
        async with AgentExecutor.over_ssh(st.config) as executor:
            drifts = await find_drift(st.config, engine, executor)
            if not fix or not drifts:
                return drifts, None
            if not as_json:
                _print_drift(drifts)
            if any(d.fix for d in drifts):
                confirm_apply(yes, False)
            return drifts, await fix_drift(drifts, engine, executor, user)

    drifts, results = asyncio.run(go())
    if as_json:
        emit_json(
            {
                "drift": [d.to_json() for d in drifts],
                "fixed": None if results is None else [r.to_json() for r in results],
            }
        )
    elif results is None:
        _print_drift(drifts)
    else:
        for r in results:
            note(
                f"{r.drift.stack or '-'} on {r.drift.node or '-'}: "
                f"{'fixed' if r.ok else 'left'}: {r.message}"
            )
    code = exit_code(drifts, results)
    if code:
        raise typer.Exit(code)


def _print_drift(drifts: Sequence[Drift]) -> None:
    if not drifts:
        stdout.print("no drift: dbspica and the nodes agree")
        return
    t = table("kind", "stack", "node", "found", "fix")
    for d in drifts:
        t.add_row(
            d.kind,
            d.stack or "-",
            d.node or "-",
            d.detail,
            d.fix or "(report only)",
        )
    stdout.print(t)

"""``spica apps`` and ``spica apps register``: the release's binaries on every node.

Thin: :mod:`spica_core.apps.survey` asks the nodes and compares, :mod:`spica_core.apps.register`
plans, guards, records and audits; here they are parsed, shown and confirmed.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from spica_tui.cli.context import state
from spica_tui.cli.output import emit_json, note, stdout, table

if TYPE_CHECKING:
    from spica_core.apps.register import RegisterPlan
    from spica_core.apps.survey import Survey

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]

app = typer.Typer(invoke_without_command=True)

STATE_STYLES = {
    "ok": "green",
    "differs": "bold red",
    "missing": "bold red",
    "unreachable": "yellow",
    "unregistered": "dim",
}


@app.callback()
def apps(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Each application of [[release.applications]] on every node: the version its binary
    reports, its sha256, and the registered version and checksum (the latest application row
    of the name). Drift is marked: a node's binary differs from the registered one, the nodes
    differ among themselves, a binary is missing. What each node has is stored in dbspica
    (node_application), which the console's nodes panel marks.

    Exit codes: 0 no drift; 1 drift; 2 configuration error; 3 dbspica unreachable, or a
    node did not answer (and no drift was found on the others).
    """
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from spica_core.apps.survey import check_applications
    from spica_core.executor.agents import AgentExecutor

    st = state(ctx)
    engine = st.engine()

    async def go() -> Survey:
        async with AgentExecutor.over_ssh(st.config) as executor:
            return await check_applications(executor, st.config, engine)

    result = asyncio.run(go())
    if as_json:
        emit_json(result.to_json())
    else:
        _print_survey(result)
    if result.drift:
        raise typer.Exit(1)
    if result.unreachable:
        raise typer.Exit(3)


def _print_survey(result: Survey) -> None:
    if not result.apps:
        note("no [[release.applications]] in the configuration: nothing to check")
        return
    t = table("application", "node", "state", "version", "sha256", "registered", "path")
    for a in result.apps:
        reg = a.registered
        registered = "-" if reg is None else f"{reg.version} {(reg.checksum or '-')[:12]}"
        for n in a.nodes:
            s = n.state(reg).value
            t.add_row(
                a.name,
                n.node,
                Text(s, STATE_STYLES[s]),
                n.version or "-",
                (n.sha256 or "-")[:12],
                registered,
                n.error or n.path or "-",
            )
    stdout.print(t)
    for reason in result.drift:
        note(f"drift: {reason}")
    for node, why in sorted(result.unreachable.items()):
        note(f"node {node} did not answer: {why}")


@app.command()
def register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Application name, as in [[release.applications]].")],
    as_user: Annotated[
        str | None, typer.Option("--as", help="Operator name for the audit.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Register a major version change even while units of the release run."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Record without asking.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be recorded, change nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Record NAME's version and checksum as found on every node after an install (the
    seed's "update application table"). Refused, naming the nodes, when a node does not
    answer, lacks the binary or has another one than the others; refused when the major
    version (X of X.Y.Z) changes while units of the configured release are pending or running,
    unless --force. Shows what it will record and asks unless --yes. Audited (operator_action,
    action apps-register): applied, unchanged, dry-run or refused.

    Exit codes: 0 recorded (or already registered, or dry run); 1 refused or declined;
    2 usage or configuration error (unknown application, no terminal to confirm on);
    3 dbspica unreachable.
    """
    import asyncio

    from spica_core.apps.register import plan_registration, settle
    from spica_core.executor.agents import AgentExecutor
    from spica_core.names import validate_name
    from spica_core.operations import operator_name

    validate_name(name, "application")
    user = operator_name(as_user)
    st = state(ctx)
    engine = st.engine()

    async def go() -> RegisterPlan:
        async with AgentExecutor.over_ssh(st.config) as executor:
            return await plan_registration(executor, st.config, engine, name)

    plan = asyncio.run(go())
    outcome = settle(
        engine, plan, user, force=force, dry_run=dry_run, confirm=None if yes else _confirm
    )
    if outcome is None:
        note("nothing recorded")
        raise typer.Exit(1)
    if as_json:
        emit_json(outcome.to_json())
        return
    if outcome.result == "dry-run":
        stdout.print(Text(plan.render()))
        note("dry run: nothing recorded")
    elif outcome.result == "unchanged":
        note(f"{name} {plan.version} ({(plan.checksum or '')[:12]}) is registered already")
    else:
        why = " (forced: major version change while units run)" if outcome.forced else ""
        note(f"registered {name} {plan.version} sha256 {plan.checksum}{why}")


def _confirm(plan: RegisterPlan) -> bool:
    from spica_core.errors import UsageError

    note(plan.render())
    if not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on: pass --yes to record (or --dry-run)")
    return typer.confirm("Record?", default=False, err=True)


def register_commands(root: typer.Typer) -> None:
    root.add_typer(app, name="apps")

"""Read-only commands: ``spica stacks``, ``stack show``, ``nodes``, ``problems``."""

from __future__ import annotations

from typing import Annotated

import typer

from spica_tui.cli.context import state
from spica_tui.cli.output import age, emit_json, human_bytes, stdout, table, when

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
STATES = ["planned", "pending", "running", "completed", "failed"]

stack_app = typer.Typer(help="One stack.", no_args_is_help=True)


def stacks(
    ctx: typer.Context,
    state_: Annotated[
        str | None,
        typer.Option("--state", "-s", help=f"One of: {', '.join(STATES)}.", metavar="STATE"),
    ] = None,
    node: Annotated[str | None, typer.Option("--node", "-n", help="Node name.")] = None,
    step: Annotated[str | None, typer.Option(help="qfin, image or stack.")] = None,
    runid: Annotated[str | None, typer.Option(help="Observing run, e.g. 03AL01.")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help="Filter, e.g. r.")] = None,
    release: Annotated[str | None, typer.Option(help="Release, e.g. T0003.")] = None,
    match: Annotated[
        str | None,
        typer.Option("--match", "-m", help="Regex searched in the name and the error."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List stacks from dbspica, by state then priority."""
    from spica_core.errors import UsageError
    from spica_core.reports import StackFilter, list_stacks
    from spica_core.states import StackState

    if state_ is not None and state_ not in STATES:
        raise UsageError(f"--state {state_!r}: expected one of {', '.join(STATES)}")
    flt = StackFilter(
        state=StackState(state_) if state_ else None,
        node=node,
        step=step,
        runid=runid,
        filter=filter_,
        release=release,
        match=match,
    )
    rows = list_stacks(state(ctx).engine(), flt, limit)
    if as_json:
        emit_json([r.to_json() for r in rows])
        return
    t = table("stack", "state", "node", "step", "runid", "filter", "prio", "line", "updated")
    for r in rows:
        line = f"{r.progress}/{r.lines}" if r.lines else "-"
        if r.state == "failed" and r.failed_line:
            line = f"failed@{r.failed_line}/{r.lines}"
        t.add_row(
            r.name,
            r.state,
            r.node or "-",
            r.step,
            r.runid or "-",
            r.filter or "-",
            str(r.priority),
            line,
            age(r.updated_at),
        )
    stdout.print(t)
    stdout.print(f"{len(rows)} stack(s)", style="dim")


@stack_app.command("show")
def stack_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Stack name.")],
    as_json: JsonOpt = False,
) -> None:
    """Everything dbspica holds about one stack: metadata, files, runs."""
    from spica_core.reports import stack_detail

    detail = stack_detail(state(ctx).engine(), name)
    if as_json:
        emit_json(detail.to_json())
        return
    s = detail.stack
    fields = [
        ("stack", s.name),
        ("state", s.state),
        ("node", s.node or "-"),
        ("step", s.step),
        ("survey", s.survey or "-"),
        ("filter", s.filter or "-"),
        ("runid", s.runid or "-"),
        ("release", s.release or "-"),
        ("priority", str(s.priority)),
        ("ranking", s.ranking or "-"),
        ("progress", f"{s.progress}/{s.lines}"),
        ("created", when(s.created_at)),
        ("launched", when(s.launched_at)),
        ("started", when(s.started_at)),
        ("finished", when(s.finished_at)),
    ]
    if s.state == "failed":
        fields += [("failed line", str(s.failed_line)), ("exit code", str(s.exit_code))]
    if s.error:
        fields.append(("error", s.error))
    for key, value in fields:
        stdout.print(f"[bold]{key:>10}[/]  {value}")
    if detail.files:
        t = table("image", "role", "filter", title="files")
        for f in detail.files:
            t.add_row(f["image"], f["role"], f["filter"] or "-")
        stdout.print(t)
    if detail.runs:
        t = table("line", "try", "exit", "started", "ended", "command", title="runs")
        for r in detail.runs:
            t.add_row(
                str(r["line"]),
                str(r["attempt"]),
                "-" if r["exit_code"] is None else str(r["exit_code"]),
                r["started_at"] or "-",
                r["ended_at"] or "-",
                r["command"],
            )
        stdout.print(t)


def nodes(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Nodes as dbspica last recorded them (status, last seen, disks)."""
    from spica_core.reports import list_nodes

    rows = list_nodes(state(ctx).engine())
    if as_json:
        emit_json(rows)
        return
    t = table("node", "host", "status", "last seen", "disks (free / total)", "last error")
    for n in rows:
        disks = "  ".join(
            f"{d['partition']} {human_bytes(d['free_bytes'])}/{human_bytes(d['total_bytes'])}"
            for d in n["disks"]
        )
        t.add_row(
            n["name"],
            f"{n['host']}:{n['port']}",
            n["status"],
            n["last_seen"] or "never",
            disks or "-",
            n["last_error"] or "",
        )
    stdout.print(t)


def problems(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Only newer than this: 2h, 3d, or an ISO date/time.")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="software or hardware.")] = None,
    unresolved: Annotated[bool, typer.Option(help="Hide resolved problems.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Software failures and hardware events, newest first."""
    from spica_core.errors import UsageError
    from spica_core.reports import list_problems, parse_since

    if kind is not None and kind not in ("software", "hardware"):
        raise UsageError(f"--kind {kind!r}: expected software or hardware")
    since_dt = parse_since(since) if since else None
    rows = list_problems(state(ctx).engine(), since_dt, kind, not unresolved, limit)
    if as_json:
        emit_json(rows)
        return
    t = table("time", "kind", "node", "stack", "runid", "filter", "message")
    for p in rows:
        style = "red" if p["kind"] == "hardware" and "back to life" not in p["message"] else None
        if "back to life" in p["message"]:
            style = "green"
        t.add_row(
            p["created_at"],
            p["kind"],
            p["node"] or "",
            p["stack"] or "",
            p["runid"] or "",
            p["filter"] or "",
            p["message"],
            style=style,
        )
    stdout.print(t)


def register(app: typer.Typer) -> None:
    app.command("stacks")(stacks)
    app.add_typer(stack_app, name="stack")
    app.command("nodes")(nodes)
    app.command("problems")(problems)

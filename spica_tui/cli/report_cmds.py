"""Read-only commands: ``spica stacks``, ``stack show``, ``nodes``, ``problems``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from spica_core.db import INT_MAX
from spica_core.units import human_bytes
from spica_tui.cli.context import CliState, state
from spica_tui.cli.output import (
    SECURITY_STYLE,
    age,
    emit_json,
    note,
    stdout,
    table,
    when,
)

if TYPE_CHECKING:
    from spica_core.cluster_snapshot import ClusterSnapshot

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
#: A row limit; bounded so that no value overflows a database driver (exit 2 beyond).
LimitOpt = Annotated[int | None, typer.Option(min=1, max=INT_MAX, help="At most this many rows.")]
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
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List stacks from dbspica, by state then priority."""
    from spica_core.errors import UsageError
    from spica_core.read_model import StackSelection, list_stacks
    from spica_core.states import StackState
    from spica_core.text import one_line

    if state_ is not None and state_ not in STATES:
        raise UsageError(f"--state {state_!r}: expected one of {', '.join(STATES)}")
    flt = StackSelection(
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
    t = table(
        "stack", "state", "node", "step", "runid", "filter", "prio", "line", "updated", "note"
    )
    for r in rows:
        line = f"{r.progress}/{r.lines}" if r.lines else "-"
        if r.state == "failed" and r.failed_line:
            line = f"failed@{r.failed_line}/{r.lines}"
        # Why a failed stack failed, or why a pending one waits ("check: ...").
        shown = one_line(r.error)
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
            shown if len(shown) <= 70 else shown[:69] + "…",
        )
    stdout.print(t)
    stdout.print(f"{len(rows)} stack(s)", style="dim")


@stack_app.command("show")
def stack_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Stack name.")],
    as_json: JsonOpt = False,
) -> None:
    """Everything dbspica holds about one stack: metadata, results, files, runs."""
    from spica_core.read_model import stack_detail
    from spica_core.text import printable

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
        stdout.print(Text.assemble((f"{key:>10}", "bold"), "  ", printable(value, lines=True)))
    if detail.result is not None:
        print_result(detail.result)
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


def print_result(result: dict[str, Any]) -> None:
    """The results block of ``stack show``: figures, files on the node, seconds per step."""
    from spica_core.read_model.results import FIGURES, RESULT_PATHS, format_figure, format_seconds
    from spica_core.text import printable

    t = table("result", "value", title="results")
    for key, label, _ in FIGURES:
        t.add_row(label, format_figure(key, result.get(key)))
    for key in RESULT_PATHS:
        if result.get(key):
            t.add_row(key.removesuffix("_path"), Text(printable(result[key])))
    for step, seconds in (result.get("step_seconds") or {}).items():
        t.add_row(f"time {printable(step)}", format_seconds(float(seconds)))
    t.add_row("recorded", result.get("recorded_at") or "-")
    stdout.print(t)


def nodes(
    ctx: typer.Context,
    recorded: Annotated[
        bool, typer.Option("--recorded", help="What dbspica last recorded, without polling.")
    ] = False,
    poll: Annotated[
        bool,
        typer.Option("--poll", help="Ask the nodes over SSH even while a monitor runs."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every node: liveness, disks, queue counts, heartbeat, last error.

    While a cluster monitor (spica watch) runs, its last poll is shown (it is at most a few
    seconds old; stderr names the monitor) and no node is contacted; otherwise, or with
    --poll, every node is polled over SSH. Exit code 3 when any node is unreachable (the
    report is printed all the same).
    """
    if recorded:
        from spica_core.read_model import list_nodes

        rows = list_nodes(state(ctx).engine())
        if as_json:
            emit_json(rows)
        else:
            _print_recorded(rows)
        return
    snapshot = None if poll else _monitor_figures(state(ctx))
    if snapshot is None:
        snapshot = _poll_once(state(ctx))
    if as_json:
        emit_json([n.to_json() for n in snapshot.nodes])
    else:
        _print_live(snapshot)
    if snapshot.unreachable:
        raise typer.Exit(3)


def _monitor_figures(st: CliState) -> ClusterSnapshot | None:
    """The running monitor's last poll when it is fresh; None to poll the nodes here."""
    from spica_core.db.types import utcnow
    from spica_core.monitor.figures import read_monitor_view

    now = utcnow()
    try:
        view = read_monitor_view(st.engine(), st.config, now)
    except Exception:  # dbspica down: poll the nodes, which still answer
        return None
    if view is None or not view.monitor.fresh(now):
        return None
    age = view.monitor.age(now)
    note(
        f"figures of monitor {view.monitor.identity.label}, polled {age:.0f} s ago "
        "(--poll asks the nodes)"
    )
    return view.cluster


def _poll_once(st: CliState) -> ClusterSnapshot:
    """One snapshot through the executor, mirrored into dbspica when it answers (best
    effort); a node down now shows dbspica's last_seen."""
    import asyncio

    from spica_core.executor.agents import AgentExecutor
    from spica_core.liveness import recorded_last_seen

    try:
        seen = recorded_last_seen(st.engine())
    except Exception:  # dbspica down: the poll goes on; the warning comes below
        seen = {}

    async def poll() -> ClusterSnapshot:
        async with AgentExecutor.over_ssh(st.config) as executor:
            executor.pool.remember_last_seen(seen)
            return await executor.snapshot()

    snapshot = asyncio.run(poll())
    try:
        from spica_core.liveness import LivenessRecorder, record_quietly

        problem = record_quietly(LivenessRecorder(st.engine()), snapshot)
    except Exception as exc:  # dbspica down must not hide the live view
        problem = str(exc)
    if problem:
        note(f"warning: liveness not recorded in dbspica: {problem}")
    return snapshot


def _print_live(snapshot: ClusterSnapshot) -> None:
    t = table(
        "node",
        "status",
        "load",
        "disks used (free)",
        "pend",
        "run",
        "done",
        "fail",
        "heartbeat",
        "last seen",
        "last error",
    )
    styles = {"up": "green", "down": "bold red", "agent-missing": "yellow", "unknown": "dim"}
    for n in snapshot.nodes:
        counts = n.queue_counts()
        disks = "  ".join(
            f"{p.name} {p.used_fraction:.0%} ({human_bytes(p.virtual_free_bytes)})"
            for p in n.partitions
        )
        hb = "-" if n.heartbeat_age is None else f"{n.heartbeat_age:.0f}s"
        t.add_row(
            n.name,
            Text(n.liveness.value, styles[n.liveness.value]),
            " ".join(f"{x:.2f}" for x in n.load) if n.load else "-",
            disks or "-",
            str(counts["pending"]),
            str(counts["running"]),
            str(counts["completed"]),
            str(counts["failed"]),
            hb,
            age(n.last_seen),
            n.last_error or "",
        )
    stdout.print(t)
    for n in snapshot.nodes:
        for lock in n.qfin_locks:
            if lock.alive:
                continue
            holder = lock.holder
            who = f"dead pid {holder.pid} on {holder.host}" if holder else "no holder"
            unit = f", unit {holder.stack}" if holder and holder.stack else ""
            note(
                f"{n.name}: QFin lock of {lock.partition} held by {who}{unit}: its QFin units "
                f"wait; clear it with 'spica unlock --qfin {lock.partition} --node {n.name}'"
            )


def _print_recorded(rows: list[dict[str, Any]]) -> None:
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
    kind: Annotated[str | None, typer.Option(help="software, hardware or security.")] = None,
    unresolved: Annotated[bool, typer.Option(help="Hide resolved problems.")] = False,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Software failures, hardware and security events, newest first."""
    from spica_core.errors import UsageError
    from spica_core.liveness import PROBLEM_KINDS
    from spica_core.read_model import list_problems
    from spica_core.reports import parse_since

    if kind is not None and kind not in PROBLEM_KINDS:
        raise UsageError(f"--kind {kind!r}: expected one of {', '.join(PROBLEM_KINDS)}")
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
        if p["kind"] == "security":
            style = SECURITY_STYLE
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

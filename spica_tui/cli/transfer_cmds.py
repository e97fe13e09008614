"""``spica transfer …``: DataTransfer from the incoming repositories to the nodes' partitions.

The group is defined here; the planning commands (status, plan, distribution) live here too,
and the copying commands (run, watch, history) register themselves on it from their own
modules. Exit codes: 0 done; 1 a plan is impossible; 2 usage (unknown runid or filter);
3 dbspica unreachable, or (status) a node that does not answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from spica_core.units import gigabytes
from spica_tui.cli.context import CliState, state
from spica_tui.cli.output import emit_json, note, stdout, table

if TYPE_CHECKING:
    from spica_core.read_model import TransferStatus
    from spica_core.transfer.disks import ClusterFigures
    from spica_core.transfer.store import RunidPlan

app = typer.Typer(
    help="DataTransfer: disk space, placement plans and verified copies of runids to nodes.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
PollOpt = Annotated[
    bool, typer.Option("--poll", help="Ask the nodes over SSH even while a monitor runs.")
]
STYLES = {"up": "green", "down": "bold red", "agent-missing": "yellow", "unknown": "dim"}


def _figures(st: CliState, poll: bool) -> ClusterFigures:
    """The disks as last reported: the running monitor's fresh figures, else a poll."""
    from spica_core.transfer.disks import cluster_figures

    figures = cluster_figures(st.engine(), st.config, poll=poll)
    if figures.monitor is not None:
        note(
            f"disk figures of monitor {figures.monitor}, polled {figures.age_seconds:.0f} s ago "
            "(--poll asks the nodes)"
        )
    return figures


@app.command("status")
def status(ctx: typer.Context, poll: PollOpt = False, as_json: JsonOpt = False) -> None:
    """Per node and partition: total, free, reserve, promised, products and virtual free;
    per runid waiting in the repositories: images, bytes and disk space needed.

    Exit code 3 when a node does not answer (the report is printed all the same).
    """
    from spica_core.read_model import transfer_status

    st = state(ctx)
    figures = _figures(st, poll)
    report = transfer_status(
        st.engine(),
        figures.cluster,
        st.config.transfer.space_factor,
        figures_from=figures.source,
    )
    if as_json:
        emit_json(report.to_json())
    else:
        _print_status(report)
    if figures.cluster.unreachable:
        raise typer.Exit(3)


def _print_status(report: TransferStatus) -> None:
    nodes = table("node", "status", "used", "Virtual free disk", "Total disk", "pending stacks")
    for n in report.disks:
        nodes.add_row(
            n.node,
            Text(n.liveness, STYLES.get(n.liveness, "")),
            f"{n.used_percent:.1f} %" if n.partitions else "-",
            gigabytes(n.virtual_free_bytes) if n.partitions else "-",
            gigabytes(n.total_bytes) if n.partitions else "-",
            str(n.pending_stacks),
        )
    stdout.print(nodes)
    parts = table(
        "node",
        "partition",
        "total",
        "free",
        "reserve",
        "promised",
        "products",
        "virtual free",
        title="partitions",
    )
    for n in report.disks:
        for p in n.partitions:
            parts.add_row(
                n.node,
                p.partition,
                gigabytes(p.total_bytes),
                gigabytes(p.free_bytes),
                gigabytes(p.reserved_bytes),
                gigabytes(p.promised_bytes),
                gigabytes(p.products_bytes),
                gigabytes(p.virtual_free_bytes),
            )
    stdout.print(parts)
    runids = table(
        "Runid",
        "Number of images",
        "Runid size",
        "Disk space needed",
        "planned",
        "filters",
        title=f"runids waiting in the repositories (space factor {report.space_factor:g})",
    )
    for r in report.runids:
        runids.add_row(
            r.runid,
            str(r.images),
            gigabytes(r.bytes),
            gigabytes(r.needed_bytes),
            str(r.planned),
            " ".join(f"{f}:{n}" for f, n in r.filters.items()),
        )
    stdout.print(runids)


@app.command("plan")
def plan(
    ctx: typer.Context,
    runid: Annotated[str, typer.Argument(help="Observing run, e.g. 03AF19.")],
    filter_: Annotated[
        str | None,
        typer.Option("--filter", help="Only this filter's images ('-': images without one)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; store nothing.")
    ] = False,
    poll: PollOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Place RUNID's waiting images on node partitions and store the plan (transfer rows
    'planned'); a runid's planned rows are replaced. Exit code 1 when the plan is
    impossible (nothing is stored), 2 for an unknown runid or filter."""
    from spica_core.operations.session import operator_name
    from spica_core.transfer.store import check_request, plan_runid

    st = state(ctx)
    engine = st.engine()
    user = operator_name()
    check_request(engine, runid, filter_)  # before any node is polled
    figures = _figures(st, poll)
    outcome = plan_runid(
        engine,
        st.config,
        figures.cluster,
        runid,
        filter_,
        dry_run=dry_run,
        user=user,
    )
    if as_json:
        emit_json(outcome.to_json())
    else:
        _print_plan(outcome)
    if not outcome.plan.fits:
        raise typer.Exit(1)


def _print_plan(outcome: RunidPlan) -> None:
    from spica_tui.cli.output import error

    what = f"{outcome.runid} [{outcome.filter or 'all filters'}]"
    if outcome.nothing_to_plan:
        note(
            f"{what}: nothing to plan: no image waits in a repository "
            f"({outcome.settled} already on a node or being copied)"
        )
        return
    if outcome.plan.shortfall is not None:
        error(f"{what}: the plan is impossible: {outcome.plan.shortfall.message()}")
        return
    stdout.print(Text(f"{outcome.runid}  {outcome.plan.distribution_row()}"))
    per_partition: dict[tuple[str, str], list[int]] = {}
    for f in outcome.files:
        row = per_partition.setdefault((f.node, f.partition), [0, 0])
        row[0] += 1
        row[1] += f.reserved_bytes
    t = table("node", "partition", "files", "space reserved", "virtual free before")
    before = {
        (p.node, p.partition): p.virtual_free_bytes for n in outcome.space for p in n.partitions
    }
    for (node, part), (files, reserved) in per_partition.items():
        t.add_row(
            node, part, str(files), gigabytes(reserved), gigabytes(before.get((node, part), 0))
        )
    stdout.print(t)
    if outcome.dry_run:
        note(f"dry run: {len(outcome.files)} transfer(s) shown, nothing stored")
        return
    if outcome.replaced:
        note(f"replaced {outcome.replaced} planned transfer(s) of {what}")
    note(f"plan {outcome.plan_id}: {len(outcome.files)} transfer(s) planned")
    if outcome.settled:
        note(f"{outcome.settled} image(s) already on a node or being copied were left alone")


@app.command("distribution")
def distribution(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Runid x node: the share and number of each runid's images on each node (dbspica)."""
    from spica_core.read_model import transfer_distribution

    st = state(ctx)
    found = transfer_distribution(st.engine(), nodes=[n.name for n in st.config.nodes])
    if as_json:
        emit_json(found.to_json())
        return
    t = table("", *found.nodes)
    for r in found.runids:
        t.add_row(r, *(found.cell(r, n) for n in found.nodes))
    stdout.print(t)

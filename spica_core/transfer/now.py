"""DataTransfer's "transfer this runid now": the runid in ``immediate`` mode, planned and
copied at once, through the same calls as ``spica transfer plan`` and ``spica transfer run``.

A face first shows :func:`preview` (a dry-run plan: nothing stored), and only on the
operator's word calls :func:`plan_now` (the runid marked ``immediate``, the plan stored as
``planned`` rows, audited) then :func:`copy_now` (a :class:`~spica_core.transfer.copy.CopyRun`
over the runid's rows). :func:`describe` is the plan as the faces show it: the seed's
distribution row (``node: % [files]``), the bytes, and the missing space of an impossible
plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.config import SpicaConfig
from spica_core.db.models import Runid
from spica_core.executor.base import FileCopier
from spica_core.transfer.copy import CopyRun, FileEvent, RunReport
from spica_core.transfer.store import RunidPlan, check_request, plan_runid
from spica_core.transfer.watch import IMMEDIATE
from spica_core.units import human_bytes


@dataclass(frozen=True)
class NowPlan:
    """What the confirmation shows: the dry-run plan and its text."""

    plan: RunidPlan
    text: str

    @property
    def doable(self) -> bool:
        return self.plan.plan.fits and bool(self.plan.files)


def describe(plan: RunidPlan) -> str:
    """The plan as text: the seed's distribution row, then bytes per partition."""
    head = f"{plan.runid} [{plan.filter or 'all filters'}]"
    if plan.nothing_to_plan:
        return (
            f"{head}: nothing to transfer: no image waits in a repository "
            f"({plan.settled} already on a node or being copied)"
        )
    if plan.plan.shortfall is not None:
        return f"{head}: impossible: {plan.plan.shortfall.message()}"
    cells = plan.plan.distribution_row()
    reserved = sum(f.reserved_bytes for f in plan.files)
    lines = [
        f"{plan.runid}  {cells}",
        f"{len(plan.files)} file(s), {human_bytes(plan.bytes)} to copy, {human_bytes(reserved)} "
        f"reserved on the nodes (space factor {plan.space_factor:g})",
    ]
    per_partition: dict[tuple[str, str], list[int]] = {}
    for f in plan.files:
        row = per_partition.setdefault((f.node, f.partition), [0, 0])
        row[0] += 1
        row[1] += f.bytes
    lines += [
        f"  {node}:{part}  {files} file(s)  {human_bytes(size)}"
        for (node, part), (files, size) in sorted(per_partition.items())
    ]
    if plan.settled:
        lines.append(f"{plan.settled} image(s) already on a node or being copied: left alone")
    return "\n".join(lines)


def preview(
    engine: Engine, config: SpicaConfig, cluster: ClusterSnapshot, runid: str, user: str
) -> NowPlan:
    """The plan the runid would get now, stored nowhere (a dry-run audit row is kept).
    UsageError for a runid dbspica does not know."""
    check_request(engine, runid, None)
    plan = plan_runid(engine, config, cluster, runid, dry_run=True, user=user)
    return NowPlan(plan, describe(plan))


def plan_now(
    engine: Engine, config: SpicaConfig, cluster: ClusterSnapshot, runid: str, user: str
) -> RunidPlan:
    """Mark the runid ``immediate`` (``spica transfer watch`` copies it first) and store its
    plan; an impossible plan stores nothing and leaves the mode as it was."""
    plan = plan_runid(engine, config, cluster, runid, user=user)
    if plan.stored:
        with Session(engine) as session, session.begin():
            session.execute(
                update(Runid).where(Runid.name == runid).values(transfer_mode=IMMEDIATE)
            )
    return plan


async def copy_now(
    config: SpicaConfig,
    engine: Engine,
    copier: FileCopier,
    runid: str,
    on_event: Callable[[FileEvent], None] | None = None,
) -> RunReport:
    """Copy the runid's planned (interrupted, failed) files, as ``spica transfer run``."""
    return await CopyRun(config, engine, copier, on_event=on_event).run(runid)


def same_placement(a: RunidPlan, b: RunidPlan) -> bool:
    """Whether two plans send every image to the same partition (the stored plan is the one
    the operator was shown)."""

    def key(p: RunidPlan) -> set[tuple[int, str, str]]:
        return {(f.image_id, f.node, f.partition) for f in p.files}

    return key(a) == key(b)


__all__ = ["NowPlan", "copy_now", "describe", "plan_now", "preview", "same_placement"]

"""``spica transfer plan``: a runid's placement, made and stored as ``transfer`` rows.

Re-planning replaces: the ``planned`` rows of the runid (of the filter, when one is named)
are deleted and the new plan's rows written in the same transaction, and their space is
not counted as promised while the new plan is made. ``running`` and ``done`` rows are
never touched, and their images (in flight, or already on a node) are not planned again.
An impossible plan writes nothing. Each stored (or dry-run) plan leaves an audit row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.config import SpicaConfig
from spica_core.db.models import Image, Node, OperatorAction, Runid, Transfer
from spica_core.db.types import affected_rows, utcnow
from spica_core.errors import SpicaError, UsageError
from spica_core.read_model.transfer import NO_FILTER, Replanning, runid_filters, transfer_space
from spica_core.transfer.planner import Assignment, ImageNeed, Plan, plan_placement
from spica_core.transfer.space import HELD_TRANSFER_STATES, NodeSpace, needed_bytes


class PlanBusy(SpicaError):
    """Another plan held the planning lock longer than we would wait."""

    def __init__(self, runid: str, seconds: float) -> None:
        self.runid = runid
        super().__init__(
            f"runid {runid}: another transfer plan is being made; waited {seconds:g} s"
        )


@dataclass(frozen=True)
class PlannedFile:
    """One file of a plan: the image, where it goes, and the space it holds there."""

    image_id: int
    filename: str
    filter: str | None
    bytes: int
    checksum: str | None
    reserved_bytes: int
    source: str
    source_node: str | None
    node: str
    partition: str
    path: str

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.filename,
            "filter": self.filter,
            "bytes": self.bytes,
            "reserved_bytes": self.reserved_bytes,
            "source": self.source,
            "source_node": self.source_node,
            "node": self.node,
            "partition": self.partition,
            "path": self.path,
        }


@dataclass(frozen=True)
class RunidPlan:
    """The outcome of planning one runid (stored or not)."""

    runid: str
    filter: str | None
    plan_id: str | None
    plan: Plan
    files: tuple[PlannedFile, ...]
    #: Images waiting in a repository that this plan covers (placed or not).
    waiting: int
    #: Images of the runid (of the filter) already on a node or in flight: left alone.
    settled: int
    #: ``planned`` rows the stored plan replaced.
    replaced: int
    stored: bool
    dry_run: bool
    space: tuple[NodeSpace, ...]
    space_factor: float

    @property
    def nothing_to_plan(self) -> bool:
        return self.waiting == 0

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "runid": self.runid,
            "filter": self.filter,
            "plan_id": self.plan_id,
            "fits": self.plan.fits,
            "stored": self.stored,
            "dry_run": self.dry_run,
            "replaced": self.replaced,
            "waiting": self.waiting,
            "settled": self.settled,
            "space_factor": self.space_factor,
            "bytes": self.bytes,
            "reserved_bytes": sum(f.reserved_bytes for f in self.files),
            "distribution": {
                node: {"files": files, "percent": round(pct, 1)}
                for node, (files, pct) in self.plan.distribution().items()
            },
            "files": [f.to_json() for f in self.files],
            "shortfall": None if self.plan.shortfall is None else self.plan.shortfall.to_json(),
        }


def check_request(engine: Engine, runid: str, filter_: str | None) -> None:
    """UsageError unless dbspica holds ``runid`` and, when named, images of ``filter_``."""
    filters = runid_filters(engine, runid)
    if filters is None:
        raise UsageError(f"runid {runid!r}: no such runid in dbspica")
    if filter_ is not None and filter_ not in filters:
        known = ", ".join(sorted(filters)) or "none"
        raise UsageError(
            f"--filter {filter_!r}: runid {runid} has no such images (filters: {known})"
        )


@dataclass(frozen=True)
class _Waiting:
    """The columns of a waiting image a plan needs (not the whole row: a runid may have
    thousands)."""

    id: int
    filename: str
    filter: str | None
    bytes: int
    checksum: str | None
    path: str | None
    repository: str


def _waiting_images(
    session: Session, runid: str, filter_: str | None
) -> tuple[list[_Waiting], int]:
    """The runid's images waiting in a repository with no transfer row a plan keeps, and
    how many of its images are settled (on a node, being copied, or left to ``spica
    transfer run`` after a failed or interrupted copy)."""
    stmt = (
        select(
            Image.id,
            Image.filename,
            Image.filter,
            Image.bytes,
            Image.checksum,
            Image.path,
            Image.repository,
        )
        .join(Runid, Image.runid_id == Runid.id)
        .where(Runid.name == runid)
    )
    if filter_ == NO_FILTER:
        stmt = stmt.where(Image.filter.is_(None))
    elif filter_ is not None:
        stmt = stmt.where(Image.filter == filter_)
    rows = session.execute(stmt.order_by(Image.filename)).all()
    running = set(
        session.scalars(
            select(Transfer.image_id).where(
                Transfer.runid == runid, Transfer.state.in_(HELD_TRANSFER_STATES)
            )
        )
    )
    waiting = [
        _Waiting(r.id, r.filename, r.filter, int(r.bytes or 0), r.checksum, r.path, r.repository)
        for r in rows
        if r.repository is not None and r.id not in running
    ]
    return waiting, len(rows) - len(waiting)


def _holding_nodes(session: Session, runid: str, filter_: str | None) -> set[str]:
    """Nodes already holding part of ``runid``: its images placed there, its transfers in
    flight or done, and the planned rows this plan does not replace (other filters)."""
    placed = session.scalars(
        select(Node.name)
        .join(Image, Image.node_id == Node.id)
        .join(Runid, Image.runid_id == Runid.id)
        .where(Runid.name == runid)
        .distinct()
    )
    kept: ColumnElement[bool] = Transfer.state.in_(("running", "done"))
    if filter_ == NO_FILTER:
        kept = or_(kept, and_(Transfer.state == "planned", Transfer.filter.is_not(None)))
    elif filter_ is not None:
        other = or_(Transfer.filter.is_(None), Transfer.filter != filter_)
        kept = or_(kept, and_(Transfer.state == "planned", other))
    sent = session.scalars(
        select(Transfer.destination_node).where(Transfer.runid == runid, kept).distinct()
    )
    return set(placed) | set(sent)


#: The MariaDB named lock held while a plan is made and stored (one planner at a time).
PLAN_LOCK = "spica.transfer.plan"
#: Seconds a planner waits for another to finish.
PLAN_LOCK_SECONDS = 30


@contextmanager
def planning(engine: Engine, runid: str) -> Iterator[Connection]:
    """A transaction in which no other planner runs: a plan reads the space promised by
    the others and writes its own rows before the next one reads, so two plans made at
    once (an operator and the automatic mode) never promise the same bytes twice.

    MariaDB: the named lock :data:`PLAN_LOCK`. SQLite: the transaction starts with a write
    that changes nothing (SQLite has one writer at a time; the others wait for it,
    ``busy_timeout``), so a dry run leaves dbspica as it was, but for its audit row.
    """
    with engine.connect() as conn:
        mysql = conn.dialect.name in ("mysql", "mariadb")
        if mysql:
            got = conn.scalar(
                text("SELECT GET_LOCK(:name, :seconds)"),
                {"name": PLAN_LOCK, "seconds": PLAN_LOCK_SECONDS},
            )
            conn.commit()
            if got != 1:
                raise PlanBusy(runid, PLAN_LOCK_SECONDS)
        try:
            with conn.begin():
                if not mysql:  # a write that changes nothing takes SQLite's writer lock
                    conn.execute(delete(Transfer).where(Transfer.id < 0))
                yield conn
        finally:
            if mysql:
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": PLAN_LOCK})
                conn.commit()


def plan_runid(
    engine: Engine,
    config: SpicaConfig,
    cluster: ClusterSnapshot,
    runid: str,
    filter_: str | None = None,
    *,
    dry_run: bool = False,
    user: str = "spica",
) -> RunidPlan:
    """Plan ``runid`` (only its ``filter_`` images when given; ``-`` for none) over the
    cluster's disks, and store it unless ``dry_run`` or impossible.

    ``cluster`` holds the disks as the nodes reported them (the monitor's last poll or a
    poll now); the space the runid's replaced planned rows held counts as free. Reading the
    space, planning and storing are one transaction under :func:`planning`. Raises
    UsageError for an unknown runid or a filter it has no image of, PlanBusy when another
    plan holds the lock too long.
    """
    check_request(engine, runid, filter_)
    factor = config.transfer.space_factor
    roots = {n.name: n.root for n in config.nodes}
    repositories = {r.name: r for r in config.transfer.repositories}
    with planning(engine, runid) as conn, Session(bind=conn) as session:
        space = tuple(transfer_space(conn, cluster, factor, replacing=Replanning(runid, filter_)))
        waiting, settled = _waiting_images(session, runid, filter_)
        if not waiting:
            return RunidPlan(
                runid, filter_, None, Plan(()), (), 0, settled, 0, False, dry_run, space, factor
            )
        needs = [
            ImageNeed(i.id, i.filename, i.filter, needed_bytes(i.bytes, factor)) for i in waiting
        ]
        plan = plan_placement(needs, space, _holding_nodes(session, runid, filter_))
        by_id = {i.id: i for i in waiting}
        files = tuple(
            _planned_file(a, by_id[a.image.image_id], runid, roots, repositories)
            for a in plan.assignments
        )
        plan_id = uuid.uuid4().hex if plan.fits else None
        stored = plan.fits and not dry_run
        replaced = _replace_rows(session, runid, filter_, plan_id or "", files) if stored else 0
        session.add(
            OperatorAction(
                user=user,
                action="transfer-plan",
                targets=[runid],
                dry_run=dry_run,
                plan=_render(runid, filter_, plan),
                result="dry-run" if dry_run else ("applied" if plan.fits else "refused"),
                detail={
                    "plan_id": plan_id,
                    "filter": filter_,
                    "files": len(files),
                    "replaced": replaced,
                    "message": None if plan.shortfall is None else plan.shortfall.message(),
                },
            )
        )
        session.flush()
    return RunidPlan(
        runid,
        filter_,
        plan_id,
        plan,
        files,
        len(waiting),
        settled,
        replaced,
        stored,
        dry_run,
        space,
        factor,
    )


def _planned_file(
    a: Assignment,
    image: _Waiting,
    runid: str,
    roots: dict[str, str],
    repositories: dict[str, Any],
) -> PlannedFile:
    repo = repositories.get(image.repository)
    source = image.path or (f"{repo.path.rstrip('/')}/{image.filename}" if repo else image.filename)
    root = roots.get(a.node, "")
    # The file keeps its own name (``811001p.fits.fz``): the image's name is the stem.
    name = source.rsplit("/", 1)[-1] or image.filename
    return PlannedFile(
        image.id,
        image.filename,
        image.filter,
        image.bytes,
        image.checksum,
        a.image.needed_bytes,
        source,
        repo.node if repo is not None else None,
        a.node,
        a.partition,
        f"{root}/{a.partition}/{runid}/{name}",
    )


def _replace_rows(
    session: Session,
    runid: str,
    filter_: str | None,
    plan_id: str,
    files: Sequence[PlannedFile],
) -> int:
    """Delete the runid's (filter's) planned rows and write ``files``; the number deleted."""
    old = delete(Transfer).where(Transfer.runid == runid, Transfer.state == "planned")
    if filter_ == NO_FILTER:
        old = old.where(Transfer.filter.is_(None))
    elif filter_ is not None:
        old = old.where(Transfer.filter == filter_)
    replaced = affected_rows(session.execute(old))
    now = utcnow()
    if files:  # one multi-row INSERT, not an ORM object per file
        session.execute(
            insert(Transfer),
            [
                {
                    "filename": f.filename,
                    "runid": runid,
                    "source": f.source,
                    "source_node": f.source_node,
                    "destination_node": f.node,
                    "destination_partition": f.partition,
                    "destination_path": f.path,
                    "bytes": f.bytes,
                    "reserved_bytes": f.reserved_bytes,
                    "checksum": f.checksum,
                    "state": "planned",
                    "plan_id": plan_id,
                    "image_id": f.image_id,
                    "filter": f.filter,
                    "created_at": now,
                    "updated_at": now,
                }
                for f in files
            ],
        )
    run = session.scalar(select(Runid).where(Runid.name == runid))
    if run is not None:
        run.transfer_status = "planned"
    return replaced


def _render(runid: str, filter_: str | None, plan: Plan) -> str:
    """The plan as the seed's distribution row (the text the audit keeps)."""
    head = f"{runid} [{filter_ or 'all filters'}]"
    if plan.shortfall is not None:
        return f"{head}: impossible: {plan.shortfall.message()}"
    return f"{head}: " + (plan.distribution_row() or "nothing to place")


__all__ = [
    "NO_FILTER",
    "PlanBusy",
    "PlannedFile",
    "RunidPlan",
    "check_request",
    "plan_runid",
    "planning",
]

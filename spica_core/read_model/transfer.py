"""DataTransfer's reads: the disks with their virtual free, the runids waiting in the
repositories, and the runid distribution over the nodes.

The disks' reported figures (total, free, reserve) come from a
:class:`~spica_core.cluster_snapshot.ClusterSnapshot` — the running monitor's last poll or a
poll of the nodes (:func:`spica_core.transfer.disks.cluster_figures`); what dbspica knows is
added here: the space promised to planned and running transfers, the estimated products of
stacks not yet started, and each node's load of such stacks (:mod:`spica_core.transfer.space`
says how virtual free is made of them).

In a runid scope there are no disks (node internals) and only the scope's runids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, exists, func, literal, select
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.db.models import Image, Node, Runid, Stack, StackFile, Transfer
from spica_core.read_model.cluster import RunidDistribution, natural_sorted, runid_distribution
from spica_core.read_model.scope import EVERYTHING, Scope
from spica_core.reports import iso
from spica_core.transfer.space import (
    LIVE_TRANSFER_STATES,
    UNSTARTED_STACK_STATES,
    Disk,
    NodeSpace,
    needed_bytes,
    node_spaces,
    stack_product_bytes,
)

#: The filter name of images without a filter keyword (``--filter -``).
NO_FILTER = "-"


@dataclass(frozen=True)
class Replanning:
    """The planned rows a new plan will replace (a runid, and a filter, :data:`NO_FILTER`,
    or None for all): their space is not counted as promised while that plan is made."""

    runid: str
    filter: str | None = None


#: A runid whose transfers are asked for by hand only (never planned automatically).
MANUAL_MODE = "manual"


def _live_transfer(image_id: Any) -> Any:
    return exists().where(Transfer.image_id == image_id, Transfer.state.in_(LIVE_TRANSFER_STATES))


@dataclass(frozen=True)
class SpaceClaims:
    """What dbspica promises on the nodes' disks, apart from the disks' own figures: the
    reserve of planned and running transfers, the estimated products of stacks not started
    (partition None: somewhere on the node), and each node's stacks waiting to run."""

    promised: dict[tuple[str, str], int] = field(default_factory=dict)
    products: dict[tuple[str, str | None], int] = field(default_factory=dict)
    load: dict[str, int] = field(default_factory=dict)


def space_claims(
    engine: Engine | Connection,
    space_factor: float,
    *,
    replacing: Replanning | None = None,
) -> SpaceClaims:
    """The claims on the disks (node internals: callers in a runid scope must not ask).

    ``engine`` may be a connection in a transaction (a planner reads the space and writes
    its plan in one, :func:`spica_core.transfer.store.planning`)."""
    promised_stmt = (
        select(
            Transfer.destination_node,
            Transfer.destination_partition,
            func.sum(Transfer.reserved_bytes),
        )
        .where(Transfer.state.in_(LIVE_TRANSFER_STATES))
        .group_by(Transfer.destination_node, Transfer.destination_partition)
    )
    if replacing is not None:
        mine = and_(Transfer.state == "planned", Transfer.runid == replacing.runid)
        if replacing.filter == NO_FILTER:
            mine = and_(mine, Transfer.filter.is_(None))
        elif replacing.filter is not None:
            mine = and_(mine, Transfer.filter == replacing.filter)
        promised_stmt = promised_stmt.where(~mine)

    # Distinct (stack, input image) pairs of the stacks not started, the input's partition
    # kept when it lies on the stack's own node.
    pairs = (
        select(
            Stack.id.label("stack_id"),
            Stack.node_id.label("node_id"),
            Image.id.label("image_id"),
            Image.bytes.label("bytes"),
            case((Image.node_id == Stack.node_id, Image.partition), else_=literal(None)).label(
                "part"
            ),
        )
        .join(StackFile, StackFile.stack_id == Stack.id)
        .join(Image, Image.id == StackFile.image_id)
        .where(
            Stack.state.in_(UNSTARTED_STACK_STATES),
            Stack.node_id.is_not(None),
            ~_live_transfer(Image.id),
        )
        .distinct()
        .subquery()
    )
    products_stmt = (
        select(Node.name, pairs.c.part, func.sum(pairs.c.bytes))
        .join(Node, Node.id == pairs.c.node_id)
        .group_by(Node.name, pairs.c.part)
    )
    load_stmt = (
        select(Node.name, func.count(Stack.id))
        .join(Node, Node.id == Stack.node_id)
        .where(Stack.state.in_(UNSTARTED_STACK_STATES))
        .group_by(Node.name)
    )
    with Session(bind=engine) as session:
        promised = {
            (str(n), str(p)): int(b or 0)
            for n, p, b in session.execute(promised_stmt)
            if n is not None and p is not None
        }
        products: dict[tuple[str, str | None], int] = {}
        for n, p, b in session.execute(products_stmt):
            key = (str(n), None if p is None else str(p))
            products[key] = products.get(key, 0) + stack_product_bytes([int(b or 0)], space_factor)
        load = {str(n): int(c) for n, c in session.execute(load_stmt)}
    return SpaceClaims(promised, products, load)


def spaces_of(cluster: ClusterSnapshot, claims: SpaceClaims) -> list[NodeSpace]:
    """The nodes' disks as ``cluster`` reported them, less ``claims``: the seed's virtual
    free, per partition (pure: the console applies each poll's disks to its last read)."""
    disks = [
        Disk(n.name, p.name, p.total_bytes, p.free_bytes, p.reserved_bytes)
        for n in cluster.nodes
        for p in n.partitions
    ]
    liveness = {n.name: n.liveness.value for n in cluster.nodes}
    spaces = node_spaces(
        disks,
        liveness,
        promised=claims.promised,
        products=claims.products,
        pending_stacks=claims.load,
    )
    order = {name: i for i, name in enumerate(natural_sorted(liveness))}
    return sorted(spaces, key=lambda s: order.get(s.node, len(order)))


def transfer_space(
    engine: Engine | Connection,
    cluster: ClusterSnapshot,
    space_factor: float,
    scope: Scope = EVERYTHING,
    *,
    replacing: Replanning | None = None,
) -> list[NodeSpace]:
    """Every node of ``cluster`` with its partitions' virtual free; [] in a runid scope."""
    if scope.hides_node_internals:
        return []
    return spaces_of(cluster, space_claims(engine, space_factor, replacing=replacing))


@dataclass(frozen=True)
class RunidWaiting:
    """A runid's images waiting in the repositories (the seed's runid table)."""

    runid: str
    images: int
    bytes: int
    needed_bytes: int
    #: Images per filter ("-" for none).
    filters: dict[str, int] = field(default_factory=dict)
    #: Of them, images a plan already sends somewhere (a planned or running transfer).
    planned: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "runid": self.runid,
            "images": self.images,
            "bytes": self.bytes,
            "needed_bytes": self.needed_bytes,
            "filters": self.filters,
            "planned": self.planned,
        }


def waiting_runids(
    engine: Engine,
    space_factor: float,
    scope: Scope = EVERYTHING,
    runids: Iterable[str] | None = None,
) -> list[RunidWaiting]:
    """Runids with images waiting in a repository: images, bytes, disk space needed
    (``space_factor`` x bytes), per filter, and how many a plan already covers."""
    live = _live_transfer(Image.id)
    stmt = (
        select(
            Runid.name,
            Image.filter,
            func.count(Image.id),
            func.sum(Image.bytes),
            func.sum(case((live, 1), else_=0)),
        )
        .join(Runid, Image.runid_id == Runid.id)
        .where(Image.repository.is_not(None))
        .group_by(Runid.name, Image.filter)
    )
    if scope.runids is not None:
        stmt = stmt.where(Runid.name.in_(sorted(scope.runids)))
    if runids is not None:
        stmt = stmt.where(Runid.name.in_(sorted(set(runids))))
    totals: dict[str, list[int]] = {}
    filters: dict[str, dict[str, int]] = {}
    with Session(engine) as session:
        for runid, flt, count, size, planned in session.execute(stmt):
            t = totals.setdefault(runid, [0, 0, 0])
            t[0] += int(count)
            t[1] += int(size or 0)
            t[2] += int(planned or 0)
            filters.setdefault(runid, {})[flt or NO_FILTER] = int(count)
    return [
        RunidWaiting(
            r,
            totals[r][0],
            totals[r][1],
            needed_bytes(totals[r][1], space_factor),
            dict(sorted(filters[r].items())),
            totals[r][2],
        )
        for r in sorted(totals)
    ]


def runids_to_plan(engine: Engine) -> list[str]:
    """Runids not in ``manual`` transfer mode with an image waiting in a repository that no
    transfer row holds (neither planned nor copied, nor failed or interrupted): what the
    automatic mode plans."""
    held = exists().where(Transfer.image_id == Image.id)
    stmt = (
        select(Runid.name)
        .join(Image, Image.runid_id == Runid.id)
        .where(Image.repository.is_not(None), Runid.transfer_mode != MANUAL_MODE, ~held)
        .distinct()
    )
    with Session(bind=engine) as session:
        return sorted(session.scalars(stmt))


def transfer_distribution(
    engine: Engine, scope: Scope = EVERYTHING, nodes: Iterable[str] = ()
) -> RunidDistribution:
    """The seed's runid distribution (runid x node, ``% [files]``) from the image rows on
    nodes; ``nodes`` adds columns for nodes holding nothing yet (none in a runid scope)."""
    found = runid_distribution(engine, scope)
    if scope.hides_node_internals:
        return found
    columns = tuple(natural_sorted(set(found.nodes) | set(nodes)))
    return replace(found, nodes=columns)


@dataclass(frozen=True)
class TransferStatus:
    """``spica transfer status``: the disks, the runids waiting, and whose figures."""

    disks: list[NodeSpace]
    runids: list[RunidWaiting]
    #: "monitor host:pid" or "poll"; None in a runid scope (no disks).
    figures_from: str | None
    figures_at: datetime | None
    space_factor: float

    def to_json(self) -> dict[str, Any]:
        return {
            "figures_from": self.figures_from,
            "figures_at": iso(self.figures_at),
            "space_factor": self.space_factor,
            "nodes": [d.to_json() for d in self.disks],
            "runids": [r.to_json() for r in self.runids],
        }


def runid_filters(engine: Engine, runid: str) -> dict[str, int] | None:
    """Every image of ``runid`` per filter ("-" for none), placed or waiting; None when
    dbspica has no such runid. Names match exactly on both engines (MariaDB's collation
    alone would take ``03af19`` for ``03AF19``)."""
    with Session(engine) as session:
        row = session.execute(select(Runid.id, Runid.name).where(Runid.name == runid)).first()
        if row is None or row.name != runid:
            return None
        found = row.id
        rows = session.execute(
            select(Image.filter, func.count(Image.id))
            .where(Image.runid_id == found)
            .group_by(Image.filter)
        )
        return {(f or NO_FILTER): int(c) for f, c in rows}


def transfer_status(
    engine: Engine,
    cluster: ClusterSnapshot | None,
    space_factor: float,
    scope: Scope = EVERYTHING,
    *,
    figures_from: str | None = None,
) -> TransferStatus:
    """The disks of ``cluster`` with their virtual free (none in a runid scope or without a
    cluster) and the runids waiting."""
    disks: list[NodeSpace] = []
    if cluster is not None and not scope.hides_node_internals:
        disks = transfer_space(engine, cluster, space_factor, scope)
    shown = cluster is not None and not scope.hides_node_internals
    return TransferStatus(
        disks,
        waiting_runids(engine, space_factor, scope),
        figures_from if shown else None,
        cluster.taken_at if shown and cluster is not None else None,
        space_factor,
    )


__all__ = [
    "NO_FILTER",
    "Replanning",
    "RunidWaiting",
    "TransferStatus",
    "runid_filters",
    "runids_to_plan",
    "transfer_distribution",
    "transfer_space",
    "transfer_status",
    "waiting_runids",
]

"""Problems, nodes and the runid distribution, within a scope."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, func, select
from sqlalchemy.orm import Session, selectinload

from spica_core.db.models import Image, Node, Problem, Runid
from spica_core.read_model.scope import EVERYTHING, SCOPED_PROBLEM_KINDS, Scope
from spica_core.reports import node_json, problem_json
from spica_core.units import distribution_cell


def _natural_key(name: str) -> tuple[Any, ...]:
    """``mix2`` before ``mix10``: node names sort as people read them."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=_natural_key)


def list_problems(
    engine: Engine,
    since: datetime | None = None,
    kind: str | None = None,
    include_resolved: bool = True,
    limit: int | None = None,
    scope: Scope = EVERYTHING,
) -> list[dict[str, Any]]:
    """Problems newest first; in a runid scope only that runid's software problems, without
    node or message (see :mod:`.scope`)."""
    stmt = select(Problem).order_by(Problem.created_at.desc(), Problem.id.desc())
    if scope.runids is not None:
        stmt = stmt.where(
            Problem.runid.in_(sorted(scope.runids)), Problem.kind.in_(SCOPED_PROBLEM_KINDS)
        )
    if since is not None:
        stmt = stmt.where(Problem.created_at >= since)
    if kind is not None:
        stmt = stmt.where(Problem.kind == kind)
    if not include_resolved:
        stmt = stmt.where(Problem.resolved.is_(False))
    if limit is not None:
        stmt = stmt.limit(limit)
    with Session(engine) as session:
        return [scope.problem(problem_json(p)) for p in session.scalars(stmt)]


def list_nodes(engine: Engine, scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """The nodes as dbspica last recorded them; none in a runid scope."""
    if scope.hides_node_internals:
        return []
    with Session(engine) as session:
        nodes = session.scalars(select(Node).options(selectinload(Node.disks)).order_by(Node.name))
        return [node_json(n) for n in nodes]


@dataclass(frozen=True)
class RunidDistribution:
    """Images of each runid per node, as on the seed's DataTransfer page.

    ``totals`` counts every image of the runid, placed on a node or not, so a row's
    percentages add up to less than 100 % while some images wait for DataTransfer. In a
    runid scope there are totals only (no node columns).
    """

    runids: tuple[str, ...]
    nodes: tuple[str, ...]
    files: dict[tuple[str, str], int]
    totals: dict[str, int]

    def share(self, runid: str, node: str) -> float | None:
        n = self.files.get((runid, node))
        if not n:
            return None
        return 100.0 * n / (self.totals.get(runid) or n)

    def cell(self, runid: str, node: str) -> str:
        """``100.0% [2 files]`` or ``-``."""
        n = self.files.get((runid, node))
        if not n:
            return "-"
        return distribution_cell(n, self.share(runid, node) or 0.0)

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "runid": r,
                "images": self.totals.get(r, 0),
                "nodes": {
                    n: {"files": self.files[(r, n)], "percent": round(self.share(r, n) or 0, 1)}
                    for n in self.nodes
                    if (r, n) in self.files
                },
            }
            for r in self.runids
        ]


def runid_distribution(engine: Engine, scope: Scope = EVERYTHING) -> RunidDistribution:
    totals_stmt = (
        select(Runid.name, func.count(Image.id))
        .join(Runid, Image.runid_id == Runid.id)
        .group_by(Runid.name)
    )
    if scope.runids is not None:
        totals_stmt = totals_stmt.where(Runid.name.in_(sorted(scope.runids)))
    with Session(engine) as session:
        placed: Sequence[Row[str, str, int]] = ()
        if not scope.hides_node_internals:
            placed = session.execute(
                select(Runid.name, Node.name, func.count(Image.id))
                .join(Runid, Image.runid_id == Runid.id)
                .join(Node, Image.node_id == Node.id)
                .group_by(Runid.name, Node.name)
            ).all()
        totals = dict(session.execute(totals_stmt).all())
    files = {(r, n): int(c) for r, n, c in placed}
    runids = tuple(sorted({r for r, _ in files} | set(totals)))
    nodes = tuple(natural_sorted({n for _, n in files}))
    return RunidDistribution(runids, nodes, files, {k: int(v) for k, v in totals.items()})

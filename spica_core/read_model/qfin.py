"""QFin's page, as on the seed's QFin interface: per runid the images received, those with
problems, QF done and in progress; the breakdowns of a runid by filter, node, grade, object,
exposure time and night; the QFin units running now.

A QFin unit is an ordinary stack of step :data:`QFIN_STEP` whose ``stack_file`` row names
its image; an image's QF state comes from its row (``qf_status``: done, failed) and from its
units' states (running, planned or pending). Each figure group is one SQL statement (the
per-image tests are correlated ``EXISTS``, the breakdowns one ``UNION ALL`` of grouped
selects): nothing here loads images into Python one by one.

In a runid scope only the scope's runids are counted and nothing about nodes is returned:
no node breakdown, no node or partition on a unit running (see :mod:`.scope`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from spica_core.db.models import Image, Node, Problem, Runid, Stack, StackFile
from spica_core.node.layout import QFIN_STEP
from spica_core.read_model.cluster import natural_sorted
from spica_core.read_model.scope import EVERYTHING, SCOPED_PROBLEM_KINDS, Scope
from spica_core.reports import iso

_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])

#: The step of QFin units (``spica qfin`` plans them; one per image and release).
#: The grade breakdown's label for images no operator graded yet (the seed's "Not graded").
NOT_GRADED = "not graded"
#: The label of an empty field in a breakdown (no filter, not on a node, no object...).
NONE_LABEL = "-"
#: The breakdowns, in the order the seed's page shows them.
BREAKDOWNS = ("filter", "node", "grade", "object", "exptime", "night")

#: Unit states that wait for a daemon: planned (not launched) or pending (queued).
QUEUED_STATES = ("planned", "pending")


@dataclass(frozen=True)
class RunidQfin:
    """One runid's QFin figures (the seed's "201 images from data transfer, 3 images with
    problems, 196 QF images"). An image counts once in each figure it matches."""

    runid: str
    #: Images ingested: placed on a node or waiting in a repository.
    received: int
    placed: int
    waiting: int
    #: QF failed, or an open problem row of one of its QFin units.
    problems: int
    #: QF done (measured and recorded).
    done: int
    #: A QFin unit of the image is running.
    running: int
    #: A QFin unit waits (planned or pending) and none runs.
    queued: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def total(cls, figures: Iterable[RunidQfin], runid: str = "") -> RunidQfin | None:
        """The figures of several runids summed (None for none)."""
        rows = list(figures)
        if not rows:
            return None
        names = [f.name for f in fields(cls) if f.name != "runid"]
        return cls(runid, **{n: sum(getattr(r, n) for r in rows) for n in names})


@dataclass(frozen=True)
class QfinBreakdowns:
    """Images of one runid (None: every runid of the scope) counted per value of each
    breakdown (:data:`BREAKDOWNS`); the node breakdown is empty in a runid scope."""

    runid: str | None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def of(self, breakdown: str) -> dict[str, int]:
        return self.counts.get(breakdown, {})

    def to_json(self) -> dict[str, Any]:
        return {"runid": self.runid, **{b: self.of(b) for b in BREAKDOWNS}}


@dataclass(frozen=True)
class QfinRunning:
    """A QFin unit running now (the seed's "QF in progress" row); node and partition None
    in a runid scope."""

    unit: str
    image: str
    runid: str | None
    filter: str | None
    object: str | None
    node: str | None
    partition: str | None
    started_at: datetime | None
    progress: int
    lines: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "started_at": iso(self.started_at)}


@dataclass(frozen=True)
class QfinView:
    """Everything the QFin screen shows but the search, read in one go."""

    read_at: datetime
    runids: tuple[RunidQfin, ...]
    breakdowns: QfinBreakdowns
    running: tuple[QfinRunning, ...]

    def runid(self, name: str) -> RunidQfin | None:
        return next((r for r in self.runids if r.runid == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "read_at": iso(self.read_at),
            "runids": [r.to_json() for r in self.runids],
            "breakdowns": self.breakdowns.to_json(),
            "running": [r.to_json() for r in self.running],
        }


# ------------------------------------------------------------------------- the SQL


def _has_unit(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """The outer query's image has a QFin unit matching ``conditions``: an uncorrelated
    ``IN`` (both engines compute it once, not once per image as a correlated ``EXISTS``
    whose planner may pick the wrong index)."""
    units = (
        select(StackFile.image_id)
        .join(Stack, Stack.id == StackFile.stack_id)
        .where(Stack.step == QFIN_STEP, *conditions)
    )
    return Image.id.in_(units)


def _open_problem(scope: Scope) -> ColumnElement[bool]:
    """An unresolved problem row names one of the image's QFin units (in a runid scope,
    of the kinds that scope may see)."""
    problems = select(Problem.stack).where(Problem.resolved.is_(False))
    if scope.runids is not None:
        problems = problems.where(Problem.kind.in_(SCOPED_PROBLEM_KINDS))
    return _has_unit(Stack.name.in_(problems))


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _in_scope(stmt: _S, scope: Scope, runid: str | None = None) -> _S:
    if scope.runids is not None:
        stmt = stmt.where(Runid.name.in_(sorted(scope.runids)))
    if runid is not None:
        stmt = stmt.where(Runid.name == runid)
    return stmt


def runid_figures(engine: Engine, scope: Scope = EVERYTHING) -> list[RunidQfin]:
    """Every runid with images, with its QFin figures (one grouped statement)."""
    running = _has_unit(Stack.state == "running")
    queued = and_(~running, _has_unit(Stack.state.in_(QUEUED_STATES)))
    problem = or_(Image.qf_status == "failed", _open_problem(scope))
    stmt = (
        select(
            Runid.name,
            func.count(Image.id),
            _count(Image.node_id.is_not(None)),
            _count(and_(Image.node_id.is_(None), Image.repository.is_not(None))),
            _count(problem),
            _count(Image.qf_status == "done"),
            _count(running),
            _count(queued),
        )
        .join(Runid, Image.runid_id == Runid.id)
        .group_by(Runid.name)
    )
    with Session(engine) as session:
        rows = session.execute(_in_scope(stmt, scope)).all()
    figures = [RunidQfin(str(r[0]), *(int(v or 0) for v in r[1:])) for r in rows]
    return sorted(figures, key=lambda f: f.runid)


def breakdowns(
    engine: Engine, runid: str | None = None, scope: Scope = EVERYTHING
) -> QfinBreakdowns:
    """The images of ``runid`` (None: all the scope's) per filter, node, grade, object,
    exposure time and night, in one ``UNION ALL`` of grouped selects."""

    def grouped(kind: str, label: Any, *, number: bool = False) -> Select[Any]:
        """(kind, text value, numeric value, images): exposure times stay numbers, so that
        both engines give the same label."""
        stmt = select(
            literal(kind, String).label("kind"),
            (null() if number else cast(label, String)).label("value"),
            (label if number else null()).label("number"),
            func.count(Image.id).label("images"),
        ).join(Runid, Image.runid_id == Runid.id)
        if kind == "node":
            stmt = stmt.join(Node, Image.node_id == Node.id, isouter=True)
        return _in_scope(stmt, scope, runid).group_by(label)

    selects = [
        grouped("filter", Image.filter),
        grouped("grade", Image.grade),
        grouped("object", Image.object),
        grouped("exptime", Image.exptime, number=True),
        grouped("night", func.date(Image.date_obs)),
    ]
    if not scope.hides_node_internals:
        selects.insert(1, grouped("node", Node.name))
    counts: dict[str, dict[str, int]] = {b: {} for b in BREAKDOWNS}
    with Session(engine) as session:
        for kind, value, number, images in session.execute(union_all(*selects)):
            label = _label(str(kind), value, number)
            into = counts[str(kind)]
            into[label] = into.get(label, 0) + int(images)
    return QfinBreakdowns(runid, {k: _ordered(k, v) for k, v in counts.items()})


def _label(kind: str, value: Any, number: Any) -> str:
    if kind == "exptime":
        return NONE_LABEL if number is None else f"{float(number):g}"
    if value is None or value == "":
        return NOT_GRADED if kind == "grade" else NONE_LABEL
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _ordered(kind: str, counts: dict[str, int]) -> dict[str, int]:
    """Grades best first with "not graded" first (the seed's order), exposure times by
    value, names as people read them; the empty label last."""
    keys = [k for k in counts if k not in (NONE_LABEL, NOT_GRADED)]
    if kind == "exptime":
        keys.sort(key=float)
    else:
        keys = natural_sorted(keys)
    head = [NOT_GRADED] if NOT_GRADED in counts else []
    tail = [NONE_LABEL] if NONE_LABEL in counts else []
    return {k: counts[k] for k in (*head, *keys, *tail)}


def running_units(
    engine: Engine, scope: Scope = EVERYTHING, runid: str | None = None
) -> list[QfinRunning]:
    """The QFin units running now, oldest first (one statement)."""
    stmt = (
        select(
            Stack.name,
            Image.filename,
            Runid.name,
            Image.filter,
            Image.object,
            Node.name,
            Image.partition,
            Stack.started_at,
            Stack.progress,
            Stack.lines,
        )
        .join(StackFile, StackFile.stack_id == Stack.id)
        .join(Image, Image.id == StackFile.image_id)
        .join(Runid, Image.runid_id == Runid.id, isouter=scope.everything)
        .join(Node, Stack.node_id == Node.id, isouter=True)
        .where(Stack.step == QFIN_STEP, Stack.state == "running")
        .order_by(Stack.started_at, Stack.name)
    )
    with Session(engine) as session:
        rows = session.execute(_in_scope(stmt, scope, runid)).all()
    hide = scope.hides_node_internals
    return [
        QfinRunning(
            unit=str(unit),
            image=str(image),
            runid=run,
            filter=flt,
            object=obj,
            node=None if hide else node,
            partition=None if hide else partition,
            started_at=started,
            progress=int(progress or 0),
            lines=int(lines or 0),
        )
        for unit, image, run, flt, obj, node, partition, started, progress, lines in rows
    ]


def qfin_units(engine: Engine, images: Iterable[str], scope: Scope = EVERYTHING) -> dict[str, str]:
    """Image name -> its latest QFin unit (the one whose log an operator wants), for the
    images of the scope that have one (one statement)."""
    names = sorted(set(images))
    if not names:
        return {}
    stmt = (
        select(Image.filename, Stack.name)
        .join(StackFile, StackFile.image_id == Image.id)
        .join(Stack, Stack.id == StackFile.stack_id)
        .join(Runid, Image.runid_id == Runid.id, isouter=scope.everything)
        .where(Stack.step == QFIN_STEP, Image.filename.in_(names))
        .order_by(Stack.created_at, Stack.id)
    )
    with Session(engine) as session:
        return {str(i): str(s) for i, s in session.execute(_in_scope(stmt, scope)).all()}


def qfin_view(
    engine: Engine, now: datetime, runid: str | None = None, scope: Scope = EVERYTHING
) -> QfinView:
    """One read of the QFin screen: every runid's figures, ``runid``'s breakdowns (None:
    all), the units running. Raises when dbspica does not answer."""
    return QfinView(
        read_at=now,
        runids=tuple(runid_figures(engine, scope)),
        breakdowns=breakdowns(engine, runid, scope),
        running=tuple(running_units(engine, scope)),
    )


__all__ = [
    "BREAKDOWNS",
    "NONE_LABEL",
    "NOT_GRADED",
    "QFIN_STEP",
    "QUEUED_STATES",
    "QfinBreakdowns",
    "QfinRunning",
    "QfinView",
    "RunidQfin",
    "breakdowns",
    "qfin_units",
    "qfin_view",
    "runid_figures",
    "running_units",
]

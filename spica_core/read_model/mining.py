"""Data mining: the figures the console plots, summed up in the database.

* the seeing distribution per filter of the images QFin measured (a histogram, binned in
  SQL);
* completeness against seeing, one point per recorded stack;
* wall time per step and per node from the runs of the command lines, the step being the tool
  a line runs (``source-extractor``, ``scamp``, ``swarp``, ``psfex``, ``stiff``, ``spica stack
  prepare|inject|record``), found in SQL from the start of the command.

Within a runid scope: those runids' images and stacks only, and no node (the time per step
is then summed over the nodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Float,
    Integer,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session

from spica_core.db.models import Image, Runid, Stack, StackResult, StackRun
from spica_core.read_model.regex import like_ci, like_escape
from spica_core.read_model.scope import EVERYTHING, Scope

#: Width of a seeing bin (arcsec).
SEEING_BIN = 0.1
#: Points of the completeness plot at most (the most recent stacks).
MAX_POINTS = 20000
#: (step, the commands that run it), first match wins: ``spica stack …`` before the tools.
STEP_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prepare", ("spica stack prepare",)),
    ("inject", ("spica stack inject",)),
    ("record", ("spica stack record",)),
    ("source-extractor", ("source-extractor", "sex")),
    ("scamp", ("scamp",)),
    ("swarp", ("swarp",)),
    ("psfex", ("psfex",)),
    ("stiff", ("stiff",)),
)
OTHER_STEP = "other"


@dataclass(frozen=True)
class SeeingBin:
    filter: str
    #: Lower edge of the bin (arcsec); the bin is ``[low, low + SEEING_BIN)``.
    low: float
    images: int

    def to_json(self) -> dict[str, Any]:
        return {"filter": self.filter, "low": self.low, "images": self.images}


@dataclass(frozen=True)
class CompletenessPoint:
    stack: str
    filter: str | None
    seeing: float
    completeness: float

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "filter": self.filter,
            "seeing": self.seeing,
            "completeness": self.completeness,
        }


@dataclass(frozen=True)
class StepTime:
    step: str
    #: None within a runid scope (summed over the nodes).
    node: str | None
    runs: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "node": self.node, "runs": self.runs, "seconds": self.seconds}


@dataclass(frozen=True)
class MiningView:
    seeing: tuple[SeeingBin, ...]
    completeness: tuple[CompletenessPoint, ...]
    steps: tuple[StepTime, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "seeing_bin": SEEING_BIN,
            "seeing": [b.to_json() for b in self.seeing],
            "completeness": [p.to_json() for p in self.completeness],
            "steps": [s.to_json() for s in self.steps],
        }


def seeing_distribution(
    session: Session, scope: Scope = EVERYTHING, width: float = SEEING_BIN
) -> list[SeeingBin]:
    """Images QFin measured, counted per filter and seeing bin."""
    ratio = (Image.seeing + 1e-9) / width  # 0.7 / 0.1 is 6.999…: bin 0.7, not 0.6
    # SQLite's CAST truncates (the seeing is positive: the floor); MariaDB's rounds.
    sqlite = session.get_bind().dialect.name == "sqlite"
    bin_ = cast(ratio, Integer) if sqlite else func.floor(ratio)
    stmt = (
        select(Image.filter, bin_, func.count())
        .where(Image.qf_status == "done", Image.seeing.is_not(None), Image.seeing >= 0)
        .group_by(Image.filter, bin_)
        .order_by(Image.filter, bin_)
    )
    if scope.runids is not None:
        stmt = stmt.join(Runid, Image.runid_id == Runid.id).where(
            Runid.name.in_(sorted(scope.runids))
        )
    return [
        SeeingBin(flt or "-", round(int(b) * width, 6), int(n))
        for flt, b, n in session.execute(stmt)
    ]


def completeness_points(
    session: Session, scope: Scope = EVERYTHING, limit: int = MAX_POINTS
) -> list[CompletenessPoint]:
    """One point per recorded stack with both figures: its seeing and its completeness."""
    stmt = (
        select(Stack.name, Stack.filter, StackResult.seeing, StackResult.completeness)
        .join(StackResult, StackResult.stack_id == Stack.id)
        .where(StackResult.seeing.is_not(None), StackResult.completeness.is_not(None))
        .order_by(StackResult.id.desc())
        .limit(limit)
    )
    if scope.runids is not None:
        stmt = stmt.where(Stack.runid.in_(sorted(scope.runids)))
    return [
        CompletenessPoint(name, flt, float(seeing), float(completeness))
        for name, flt, seeing, completeness in session.execute(stmt)
        if seeing is not None and completeness is not None
    ]


def _starts_with(command: str, dialect: str) -> ColumnElement[bool]:
    """A line running ``command``, whatever its case (``SWarp`` is ``swarp``): alone, with
    arguments, or by an absolute path."""
    c, name = StackRun.command.expression, like_escape(command)
    return or_(*(like_ci(c, p, dialect) for p in (name, f"{name} %", f"%/{name} %")))


def step_of_command(dialect: str) -> ColumnElement[str]:
    """The step a run's command line is, as SQL."""
    whens = [
        (or_(*(_starts_with(c, dialect) for c in commands)), literal(step))
        for step, commands in STEP_COMMANDS
    ]
    return case(*whens, else_=literal(OTHER_STEP))


def _seconds(dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return (func.julianday(StackRun.ended_at) - func.julianday(StackRun.started_at)) * 86400.0
    diff = func.timestampdiff(literal_column("MICROSECOND"), StackRun.started_at, StackRun.ended_at)
    return cast(diff, Float) / 1e6


def step_times(session: Session, scope: Scope = EVERYTHING) -> list[StepTime]:
    """Runs that ended, their number and wall seconds per step and node."""
    dialect = session.get_bind().dialect.name
    step = step_of_command(dialect).label("step")
    seconds = func.sum(_seconds(dialect))
    hide = scope.hides_node_internals
    keys: list[Any] = [step] if hide else [step, StackRun.node]
    stmt = (
        select(*keys, func.count(), seconds)
        .where(StackRun.ended_at.is_not(None))
        .group_by(*keys)
        .order_by(*keys)
    )
    if scope.runids is not None:
        stmt = stmt.join(Stack, Stack.id == StackRun.stack_id).where(
            Stack.runid.in_(sorted(scope.runids))
        )
    out = []
    for row in session.execute(stmt):
        node = None if hide else row[1]
        runs, total = row[-2], row[-1]
        out.append(StepTime(row[0], node, int(runs), max(0.0, float(total or 0.0))))
    return out


def mining_view(engine: Engine, scope: Scope = EVERYTHING) -> MiningView:
    """The three figures of the data-mining screen, in one session."""
    with Session(engine) as session:
        return MiningView(
            tuple(seeing_distribution(session, scope)),
            tuple(completeness_points(session, scope)),
            tuple(step_times(session, scope)),
        )

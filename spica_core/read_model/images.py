"""Images with their QFin figures and grades: the query behind ``spica images`` and the
QFin screen's search (the seed's QFin "Search utility").

Every condition is SQL (a filename regex too, bounded as the stacks' ``--match``), rows come
ordered by runid then image name, and a runid scope sees only its runids' images with no
node, path or QFin error text (:mod:`.scope`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from spica_core.db.models import Image, Node, Runid
from spica_core.errors import UsageError
from spica_core.names import validate_name
from spica_core.qfin.result import GRADES
from spica_core.read_model.regex import (
    SqlPattern,
    check_regex_warnings,
    regex_bounded,
    regexp,
    sql_pattern,
)
from spica_core.read_model.scope import EVERYTHING, Scope
from spica_core.reports import iso
from spica_core.text import require_utf8

#: ``--grade none``: images no operator has graded yet.
NOT_GRADED = "none"
#: An image's QFin state (``image.qf_status``): ingested, unit planned, running, measured,
#: or failed (with ``qf_error``).
QF_STATES = ("new", "planned", "running", "done", "failed")


@dataclass(frozen=True)
class Range:
    """An inclusive range of a measured figure; either end may be open (None)."""

    min: float | None = None
    max: float | None = None

    @classmethod
    def parse(cls, text: str, option: str) -> Range:
        """``MIN:MAX``, ``MIN:`` or ``:MAX`` (``0.6:1.2``); UsageError naming ``option``."""
        shown = text if len(text) <= 40 else text[:37] + "..."
        low, sep, high = text.partition(":")
        if not sep:
            raise UsageError(f"{option} {shown!r}: expected MIN:MAX, MIN: or :MAX")
        try:
            ends = [float(v) if v.strip() else None for v in (low, high)]
        except ValueError:
            raise UsageError(f"{option} {shown!r}: MIN and MAX must be numbers") from None
        return cls(*ends).checked(option)

    def checked(self, option: str) -> Range:
        for end in (self.min, self.max):
            if end is not None and not math.isfinite(end):
                raise UsageError(f"{option}: {end} is not a finite number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise UsageError(f"{option}: MIN {self.min:g} is larger than MAX {self.max:g}")
        return self

    @property
    def open(self) -> bool:
        return self.min is None and self.max is None

    def __str__(self) -> str:
        return f"{'' if self.min is None else f'{self.min:g}'}:" + (
            "" if self.max is None else f"{self.max:g}"
        )


@dataclass(frozen=True)
class ImageQuery:
    """Which images: every field set narrows it (the seed's QFin search fields).

    ``grade`` is A-D or :data:`NOT_GRADED`; ``qf`` one of :data:`QF_STATES`; ``match`` a
    case-insensitive regex (RE2) searched in the image name. Bad values are a UsageError
    naming the option when the query is made, before any SQL.
    """

    runid: str | None = None
    filter: str | None = None
    grade: str | None = None
    qf: str | None = None
    node: str | None = None
    object: str | None = None
    match: str | None = None
    seeing: Range = field(default_factory=Range)
    airmass: Range = field(default_factory=Range)
    background: Range = field(default_factory=Range)
    exptime: Range = field(default_factory=Range)
    scope: Scope = EVERYTHING

    def __post_init__(self) -> None:
        for option, value in (
            ("--runid", self.runid),
            ("--filter", self.filter),
            ("--object", self.object),
        ):
            if value is not None:
                require_utf8(value, option)
        if self.node is not None:
            validate_name(self.node, "node")
        self.scope.refuse_node_filter(self.node)
        if self.grade is not None and self.grade not in (*GRADES, NOT_GRADED):
            raise UsageError(
                f"--grade {self.grade!r}: expected one of {', '.join(GRADES)} or {NOT_GRADED}"
            )
        if self.qf is not None and self.qf not in QF_STATES:
            raise UsageError(f"--qf {self.qf!r}: expected one of {', '.join(QF_STATES)}")
        for option, rng in self.ranges:
            rng.checked(f"--{option}")
        self.match_pattern  # noqa: B018 - a bad pattern is a UsageError now

    @property
    def ranges(self) -> tuple[tuple[str, Range], ...]:
        return (
            ("seeing", self.seeing),
            ("airmass", self.airmass),
            ("background", self.background),
            ("exptime", self.exptime),
        )

    @cached_property
    def match_pattern(self) -> SqlPattern | None:
        return None if self.match is None else sql_pattern(self.match, "--match", ignore_case=True)


@dataclass(frozen=True)
class ImageRow:
    """One image as ``spica images`` and the QFin screen show it."""

    image: str
    runid: str | None
    filter: str | None
    object: str | None
    exptime: float | None
    airmass: float | None
    date_obs: datetime | None
    seeing: float | None
    elongation: float | None
    background: float | None
    sources: int | None
    proposal: str | None
    reasons: tuple[str, ...]
    grade: str | None
    grade_comment: str | None
    graded_by: str | None
    graded_at: datetime | None
    qf_status: str
    qf_release: str | None
    qf_error: str | None
    node: str | None

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["reasons"] = list(self.reasons)
        for key in ("date_obs", "graded_at"):
            out[key] = iso(out[key])
        return out


_RANGED: dict[str, InstrumentedAttribute[float | None]] = {
    "seeing": Image.seeing,
    "airmass": Image.airmass,
    "background": Image.background,
    "exptime": Image.exptime,
}


#: Any select statement, whatever its columns.
AnySelect = Select[*tuple[Any, ...]]


def located(*columns: Any) -> AnySelect:
    """``columns`` of the images joined to their runid and node, either of which may be
    missing (an image still in a repository has no node): where every image read starts."""
    return (
        select(*columns)
        .select_from(Image)
        .outerjoin(Runid, Image.runid_id == Runid.id)
        .outerjoin(Node, Image.node_id == Node.id)
    )


def _where(stmt: AnySelect, query: ImageQuery, dialect: str) -> AnySelect:
    scope = query.scope
    if scope.runids is not None:
        stmt = stmt.where(Runid.name.in_(sorted(scope.runids)))
    if query.runid is not None:
        stmt = stmt.where(Runid.name == query.runid)
    for text, value in ((Image.filter, query.filter), (Image.object, query.object)):
        if value is not None:
            stmt = stmt.where(text == value)
    if query.grade == NOT_GRADED:
        stmt = stmt.where(Image.grade.is_(None))
    elif query.grade is not None:
        stmt = stmt.where(Image.grade == query.grade)
    if query.qf is not None:
        stmt = stmt.where(Image.qf_status == query.qf)
    if query.node is not None:
        stmt = stmt.where(Image.node_id.in_(select(Node.id).where(Node.name == query.node)))
    for name, rng in query.ranges:
        column = _RANGED[name]
        if rng.min is not None:
            stmt = stmt.where(column >= rng.min)
        if rng.max is not None:
            stmt = stmt.where(column <= rng.max)
    if query.match_pattern is not None:
        stmt = stmt.where(regexp(Image.filename.expression, query.match_pattern, dialect))
    return stmt


def list_images(
    source: Session | Engine,
    query: ImageQuery,
    limit: int | None = None,
    offset: int = 0,
) -> list[ImageRow]:
    """Images ``query`` selects, by runid then name; ``limit``/``offset`` page in SQL."""
    if isinstance(source, Session):
        return _list(source, query, limit, offset)
    with Session(source) as session:
        return _list(session, query, limit, offset)


def _list(session: Session, query: ImageQuery, limit: int | None, offset: int) -> list[ImageRow]:
    stmt = _where(located(Image, Runid.name, Node.name), query, session.get_bind().dialect.name)
    stmt = stmt.order_by(Runid.name, Image.filename).offset(max(0, offset))
    if limit is not None:
        stmt = stmt.limit(max(0, limit))
    with regex_bounded(session, query.match_pattern):
        found = session.execute(stmt).all()
        check_regex_warnings(session, query.match_pattern)
    hide = query.scope.hides_node_internals
    return [_row(image, runid, None if hide else name, hide) for image, runid, name in found]


def _row(image: Image, runid: str | None, node: str | None, hide: bool) -> ImageRow:
    return ImageRow(
        image=image.filename,
        runid=runid,
        filter=image.filter,
        object=image.object,
        exptime=image.exptime,
        airmass=image.airmass,
        date_obs=image.date_obs,
        seeing=image.seeing,
        elongation=image.elongation,
        background=image.background,
        sources=image.sources,
        proposal=image.grade_proposal,
        reasons=tuple(str(r) for r in image.grade_reasons or ()),
        grade=image.grade,
        grade_comment=image.grade_comment,
        graded_by=image.graded_by,
        graded_at=image.graded_at,
        qf_status=image.qf_status,
        qf_release=image.qf_release,
        qf_error=None if hide else image.qf_error,
        node=node,
    )

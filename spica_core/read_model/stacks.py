"""Stacks: one selection, windows, counts, the CLI's listing and one stack's detail.

Two orders, both as before: the *view* order of the console (all states by name, the unique
index; one state by priority then newest first, the ``(state, priority)`` index, whose entries
end with the primary key on SQLite and InnoDB alike) and the *report* order of ``spica
stacks`` and the operations (state, priority descending, name).

Every filter, the regex included, is SQL: a window reads only the rows it shows plus what the
database scans, counts are ``COUNT`` and per-state counts one pass of conditional sums.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, Select, case, func, or_, select
from sqlalchemy.orm import Session, selectinload

from spica_core.db.models import Node, Stack, StackApp, StackFile
from spica_core.errors import NotFound
from spica_core.names import validate_name
from spica_core.read_model.regex import (
    SqlPattern,
    check_regex_warnings,
    like_ci,
    like_escape,
    regex_bounded,
    regexp,
    sql_pattern,
)
from spica_core.read_model.results import stack_result
from spica_core.read_model.scope import EVERYTHING, Scope
from spica_core.reports import StackDetail, StackRow, run_json
from spica_core.states import StackState
from spica_core.text import require_utf8

#: Characters that make a console filter a regular expression rather than a substring.
#: ``.``, ``+``, ``-`` and ``_`` are left out: stack names are made of them.
REGEX_CHARS = frozenset("^$*?()[]{}|\\")
#: States a stack can be shown in (removed stacks have no row).
VIEW_STATES: tuple[StackState, ...] = tuple(s for s in StackState if s is not StackState.REMOVED)

Order = Literal["view", "report"]


@dataclass(frozen=True)
class StackSelection:
    """Which stacks: every field set narrows it.

    ``text`` is the console's filter: a case-insensitive substring of the name, node, runid,
    filter or error, or, when it holds a regex metacharacter (:data:`REGEX_CHARS`), a
    case-insensitive regex searched in the same columns. ``match`` is the CLI's ``--match``:
    a case-sensitive regex searched in the name and the error. Both regexes are RE2 syntax,
    matched in the database (:mod:`spica_core.read_model.regex`). ``names`` keeps only those
    stacks (which marked stacks a view still shows). A bad pattern or name is a UsageError
    when the selection is made, before any query.
    """

    state: StackState | None = None
    text: str = ""
    names: frozenset[str] | None = None
    node: str | None = None
    step: str | None = None
    runid: str | None = None
    filter: str | None = None
    release: str | None = None
    match: str | None = None

    def __post_init__(self) -> None:
        if self.node is not None:
            validate_name(self.node, "node")
        for option, value in (
            ("--step", self.step),
            ("--runid", self.runid),
            ("--filter", self.filter),
            ("--release", self.release),
        ):
            if value is not None:
                require_utf8(value, option)
        self.text_pattern  # noqa: B018 - a bad pattern is a UsageError now
        self.match_pattern  # noqa: B018

    @property
    def is_regex(self) -> bool:
        return any(c in REGEX_CHARS for c in self.text)

    @cached_property
    def text_pattern(self) -> SqlPattern | None:
        if not self.text or not self.is_regex:
            return None
        return sql_pattern(self.text, "filter", ignore_case=True)

    @cached_property
    def match_pattern(self) -> SqlPattern | None:
        return None if self.match is None else sql_pattern(self.match, "--match")

    @property
    def patterns(self) -> tuple[SqlPattern, ...]:
        return tuple(p for p in (self.text_pattern, self.match_pattern) if p is not None)

    @property
    def narrowed_by_text(self) -> bool:
        """Whether a text or regex condition keeps few rows or many (see :func:`_ordered`)."""
        return bool(self.text) or self.match is not None

    def with_state(self, state: StackState | None) -> StackSelection:
        return _replace(self, state=state)

    def with_names(self, names: frozenset[str] | None) -> StackSelection:
        return _replace(self, names=names)


def _replace(sel: StackSelection, **changes: Any) -> StackSelection:
    from dataclasses import replace

    return replace(sel, **changes)


def _like_pattern(text: str) -> str:
    return f"%{like_escape(text)}%"


def _any_text(scope: Scope, test: Any, *, console: bool) -> ColumnElement[bool]:
    """``test(column)`` ORed over the searched columns: the console's filter searches the
    name, node, runid, filter and error, ``--match`` the name and error. A restricted scope
    searches nothing it does not show (no node, no error). The node name is matched in the
    small node table first, so the stack scan needs no join."""
    internals = not scope.hides_node_internals
    conds = [test(Stack.name)]
    if console and internals:
        conds.append(Stack.node_id.in_(select(Node.id).where(test(Node.name))))
    if console:
        conds += [test(Stack.runid), test(Stack.filter)]
    if internals:
        conds.append(test(Stack.error))
    return or_(*conds)


def where(stmt: Select[Any], sel: StackSelection, scope: Scope, dialect: str) -> Select[Any]:
    """Every condition of ``sel`` within ``scope``, as SQL."""
    scope.refuse_node_filter(sel.node)
    if scope.runids is not None:
        stmt = stmt.where(Stack.runid.in_(sorted(scope.runids)))
    if sel.state is not None:
        stmt = stmt.where(Stack.state == sel.state.value)
    if sel.names is not None:
        stmt = stmt.where(Stack.name.in_(sorted(sel.names)))
    if sel.node is not None:
        stmt = stmt.where(Stack.node_id.in_(select(Node.id).where(Node.name == sel.node)))
    for column, value in (
        (Stack.step, sel.step),
        (Stack.runid, sel.runid),
        (Stack.filter, sel.filter),
        (Stack.release, sel.release),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    text_pattern = sel.text_pattern
    if text_pattern is not None:
        stmt = stmt.where(
            _any_text(scope, lambda c: regexp(c, text_pattern, dialect), console=True)
        )
    elif sel.text:
        like = _like_pattern(sel.text)
        stmt = stmt.where(_any_text(scope, lambda c: like_ci(c, like, dialect), console=True))
    match_pattern = sel.match_pattern
    if match_pattern is not None:
        stmt = stmt.where(
            _any_text(scope, lambda c: regexp(c, match_pattern, dialect), console=False)
        )
    return stmt


def _ordered(stmt: Select[Any], sel: StackSelection, order: Order) -> Select[Any]:
    """``order``. In the view order with a text filter the sort keys are wrapped in a no-op
    expression: a filter keeps few rows or many, and a scan with a top-N sort costs at most
    one pass where walking the index costs a lookup per row (two to four times slower for a
    rare match)."""
    if order == "report":
        return stmt.order_by(Stack.state, Stack.priority.desc(), Stack.name)
    filtered = sel.narrowed_by_text
    if sel.state is None:
        return stmt.order_by(Stack.name.concat("") if filtered else Stack.name)
    priority = Stack.priority + 0 if filtered else Stack.priority
    return stmt.order_by(priority.desc(), (Stack.id + 0 if filtered else Stack.id).desc())


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _pattern(sel: StackSelection) -> SqlPattern | None:
    """The pattern a statement's bounds and refusals name (the first, when both)."""
    patterns = sel.patterns
    return patterns[0] if patterns else None


def _all(session: Session, stmt: Select[Any], sel: StackSelection) -> list[Any]:
    """Run ``stmt`` to the end under the regex bounds (see :mod:`.regex`)."""
    pattern = _pattern(sel)
    with regex_bounded(session, pattern):
        rows = list(session.execute(stmt))
        check_regex_warnings(session, pattern)
    return rows


# ------------------------------------------------------------------------ windows


@dataclass(frozen=True)
class StackPage:
    """Rows ``offset .. offset+len(rows)`` of a view; ``total`` when it was counted."""

    query: StackSelection
    offset: int
    rows: tuple[StackRow, ...]
    total: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.query.state.value if self.query.state else None,
            "filter": self.query.text,
            "offset": self.offset,
            "total": self.total,
            "rows": [r.to_json() for r in self.rows],
        }


def _rows_by_id(session: Session, ids: Sequence[int], scope: Scope) -> list[StackRow]:
    if not ids:
        return []
    found = {
        s.id: scope.stack_row(StackRow.of(s))
        for s in session.scalars(
            select(Stack).where(Stack.id.in_(ids)).options(selectinload(Stack.node))
        )
    }
    return [found[i] for i in ids if i in found]


def page_stacks(
    engine: Engine,
    sel: StackSelection,
    offset: int,
    limit: int,
    *,
    with_total: bool = False,
    scope: Scope = EVERYTHING,
) -> StackPage:
    """Rows ``offset..offset+limit`` of ``sel`` in view order, paged in SQL."""
    offset, limit = max(0, offset), max(0, limit)
    with Session(engine) as session:
        dialect = _dialect(session)
        id_stmt = _ordered(where(select(Stack.id), sel, scope, dialect), sel, "view")
        ids = [r[0] for r in _all(session, id_stmt.offset(offset).limit(limit), sel)]
        rows = _rows_by_id(session, ids, scope)
        total = _count(session, sel, scope) if with_total else None
    return StackPage(sel, offset, tuple(rows), total)


def _count(session: Session, sel: StackSelection, scope: Scope) -> int:
    stmt = where(select(func.count()).select_from(Stack), sel, scope, _dialect(session))
    return int(_all(session, stmt, sel)[0][0] or 0)


def count_stacks(engine: Engine, sel: StackSelection, scope: Scope = EVERYTHING) -> int:
    """How many stacks ``sel`` selects."""
    with Session(engine) as session:
        return _count(session, sel, scope)


def state_counts(
    engine: Engine, sel: StackSelection | None = None, scope: Scope = EVERYTHING
) -> dict[str, int]:
    """Stacks per state (every state but removed) under ``sel`` (its own state ignored):
    the console's view tabs and the dashboard's counts."""
    counts = {s.value: 0 for s in VIEW_STATES}
    base = (sel or StackSelection()).with_state(None)
    with Session(engine) as session:
        dialect = _dialect(session)
        if base == StackSelection() and scope.everything:
            stmt = select(Stack.state, func.count()).group_by(Stack.state)
            for state, n in session.execute(stmt):
                if state in counts:
                    counts[state] = int(n)
            return counts
        # One pass of conditional sums: a GROUP BY would walk the state index and look
        # every row up, several times slower than the scan a filter needs anyway.
        sums = [func.sum(case((Stack.state == s, 1), else_=0)) for s in counts]
        sums_stmt: Select[Any] = select(*sums).select_from(Stack)
        values = _all(session, where(sums_stmt, base, scope, dialect), base)[0]
    return {s: int(v or 0) for s, v in zip(counts, values, strict=True)}


# ----------------------------------------------------------- the CLI and operations


def iter_stacks(
    session: Session,
    sel: StackSelection,
    limit: int | None = None,
    scope: Scope = EVERYTHING,
) -> Iterator[Stack]:
    """Stacks of ``sel`` in report order, streamed, as ORM rows (the operations change
    them). Callers showing them pass each through ``scope.stack_row``."""
    stmt = _ordered(
        where(select(Stack).options(selectinload(Stack.node)), sel, scope, _dialect(session)),
        sel,
        "report",
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    pattern = _pattern(sel)
    with regex_bounded(session, pattern):
        result = session.scalars(stmt.execution_options(yield_per=1000))
        try:
            yield from result
        finally:
            result.close()
        check_regex_warnings(session, pattern)


def list_stacks(
    engine: Engine, sel: StackSelection, limit: int | None = None, scope: Scope = EVERYTHING
) -> list[StackRow]:
    with Session(engine) as session:
        return [scope.stack_row(StackRow.of(s)) for s in iter_stacks(session, sel, limit, scope)]


def stack_detail(engine: Engine, name: str, scope: Scope = EVERYTHING) -> StackDetail:
    """Everything dbspica holds about stack ``name``; NotFound when it has no row or the
    scope does not see it (the same answer: a scope never learns that a name exists)."""
    validate_name(name, "stack")
    with Session(engine) as session:
        stack = session.scalars(
            select(Stack)
            .where(Stack.name == name)
            .options(
                selectinload(Stack.node),
                selectinload(Stack.files).selectinload(StackFile.image),
                selectinload(Stack.runs),
                selectinload(Stack.apps).selectinload(StackApp.application),
            )
        ).one_or_none()
        if stack is None or not scope.sees_runid(stack.runid):
            raise NotFound("stack", name)
        files = [
            {"image": f.image.filename, "role": f.role, "filter": f.image.filter}
            for f in sorted(stack.files, key=lambda f: (f.role, f.image.filename))
        ]
        runs = [run_json(r) for r in stack.runs]
        apps = [{"name": a.application.name, "version": a.version} for a in stack.apps]
        result = stack_result(session, stack.id)
        return scope.stack_detail(StackDetail(StackRow.of(stack), files, runs, apps, result))

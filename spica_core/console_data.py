"""What the operations console reads, as plain data any script could use too.

* :class:`StackQuery`, :func:`count_stacks`, :func:`page_stacks`, :func:`state_counts_for` —
  a window of the stack table in a stable, index-friendly order, so a view of 100,000 stacks
  only ever reads the rows it shows. The operator's filter is a plain substring (SQL
  ``LIKE``, case-insensitive, over name, node, runid, filter and error) unless it holds a
  regex metacharacter (``^ $ * ? ( ) [ ] { } | \\``): then it is an RE2 pattern (linear
  time, :mod:`spica_core.patterns`), the same matching as the CLI's ``--match``, applied while
  streaming those five narrow columns in the same order, stopping as soon as the window is
  full (so the first page of a common match is cheap; a rare one costs one narrow scan).
* :func:`runid_distribution` — the seed's DataTransfer "Runid distribution" (runid x node,
  ``100.0% [2 files]``).
* :class:`DbState` / :func:`read_db_state` and :class:`ConsoleSnapshot` — one poll of dbspica
  and of the nodes, each with the time of its last good data, so nothing stale looks fresh.
* :func:`command_lines` and :func:`fetch_log_tail` — a stack's commands with per-line status,
  and the failed line's log from its node.

Orders: all states by name (the unique index); one state by priority then newest first
(the ``(state, priority)`` index, whose entries end with the primary key on SQLite and
InnoDB alike, so no sort step is needed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Engine, Select, case, func, or_, select
from sqlalchemy.orm import Session, selectinload

from spica_core.cluster_snapshot import ClusterSnapshot, NodeSnapshot
from spica_core.db.models import Image, Node, Runid, Stack
from spica_core.db.types import utcnow
from spica_core.monitor.figures import MonitorStatus
from spica_core.patterns import UserPattern, compile_pattern
from spica_core.reports import StackDetail, StackRow, list_problems
from spica_core.states import StackState

if TYPE_CHECKING:
    from spica_core.node_pool import NodePool

#: Characters that make a console filter a regular expression rather than a substring.
#: ``.``, ``+``, ``-`` and ``_`` are left out: stack names are made of them.
REGEX_CHARS = frozenset("^$*?()[]{}|\\")
#: States a stack can be shown in (removed stacks have no row).
VIEW_STATES: tuple[StackState, ...] = (
    StackState.PLANNED,
    StackState.PENDING,
    StackState.RUNNING,
    StackState.COMPLETED,
    StackState.FAILED,
)
_REGEX_BATCH = 2000


def _natural_key(name: str) -> tuple[Any, ...]:
    """``mix2`` before ``mix10``: node names sort as people read them."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=_natural_key)


# ------------------------------------------------------------------------ stack windows


@dataclass(frozen=True)
class StackQuery:
    """Which stacks a console view shows: a state (None: all), the operator's filter text,
    and optionally a set of names (to ask which marked stacks a view still shows)."""

    state: StackState | None = None
    text: str = ""
    names: frozenset[str] | None = None

    def __post_init__(self) -> None:
        self.pattern  # noqa: B018 - a bad regex is a UsageError now, not in a worker later

    @property
    def is_regex(self) -> bool:
        return any(c in REGEX_CHARS for c in self.text)

    @cached_property
    def pattern(self) -> UserPattern | None:
        """The filter as a case-insensitive RE2 pattern (linear time: see
        :mod:`spica_core.patterns`), None when it is plain text."""
        if not self.text or not self.is_regex:
            return None
        return compile_pattern(self.text, "filter", ignore_case=True)

    def with_state(self, state: StackState | None) -> StackQuery:
        return StackQuery(state, self.text, self.names)


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_TEXT_COLUMNS = (Stack.name, Node.name, Stack.runid, Stack.filter, Stack.error)


def _where(stmt: Select[Any], query: StackQuery) -> Select[Any]:
    """Apply the state, names and (when plain text) the LIKE filter of ``query``.

    LIKE is case-insensitive on SQLite and on MySQL/MariaDB's default collations; the node
    name is matched in the small node table first, so the stack scan needs no join.
    """
    if query.state is not None:
        stmt = stmt.where(Stack.state == query.state.value)
    if query.names is not None:
        stmt = stmt.where(Stack.name.in_(sorted(query.names)))
    if query.text and not query.is_regex:
        like = _like_pattern(query.text)
        nodes = select(Node.id).where(Node.name.like(like, escape="\\"))
        stmt = stmt.where(
            or_(
                Stack.name.like(like, escape="\\"),
                Stack.node_id.in_(nodes),
                Stack.runid.like(like, escape="\\"),
                Stack.filter.like(like, escape="\\"),
                Stack.error.like(like, escape="\\"),
            )
        )
    return stmt


def _ordered(stmt: Select[Any], query: StackQuery) -> Select[Any]:
    """View order. With a plain filter the sort keys are wrapped in a no-op expression: a
    LIKE keeps few rows or many, and a scan with a top-N sort costs at most one pass where
    walking the index costs a lookup per row (two to four times slower for a rare match)."""
    filtered = bool(query.text) and not query.is_regex
    if query.state is None:
        return stmt.order_by(Stack.name.concat("") if filtered else Stack.name)
    priority = Stack.priority + 0 if filtered else Stack.priority
    return stmt.order_by(priority.desc(), (Stack.id + 0 if filtered else Stack.id).desc())


def _regex_ids(
    session: Session, query: StackQuery, stop_after: int | None
) -> tuple[list[int], bool]:
    """Ids of the stacks whose text columns match the regex, in view order.

    Streams five narrow columns; stops once ``stop_after`` ids are found (None: never).
    Returns the ids and whether the scan reached the end.
    """
    pattern = query.pattern
    assert pattern is not None
    stmt = _where(select(Stack.id, *_TEXT_COLUMNS).outerjoin(Node, Stack.node_id == Node.id), query)
    ids: list[int] = []
    result = session.execute(_ordered(stmt, query).execution_options(yield_per=_REGEX_BATCH))
    for row in result:
        if pattern.search_any(row[1:]):
            ids.append(row[0])
            if stop_after is not None and len(ids) >= stop_after:
                result.close()
                return ids, False
    return ids, True


@dataclass(frozen=True)
class StackPage:
    """Rows ``offset .. offset+len(rows)`` of a view; ``total`` when it was counted."""

    query: StackQuery
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


def _rows_by_id(session: Session, ids: Sequence[int]) -> list[StackRow]:
    if not ids:
        return []
    found = {
        s.id: StackRow.of(s)
        for s in session.scalars(
            select(Stack).where(Stack.id.in_(ids)).options(selectinload(Stack.node))
        )
    }
    return [found[i] for i in ids if i in found]


def page_stacks(
    engine: Engine, query: StackQuery, offset: int, limit: int, *, with_total: bool = False
) -> StackPage:
    """Rows ``offset..offset+limit`` of ``query`` in view order (see the module docstring).

    Plain filters page in SQL (``LIMIT``/``OFFSET`` over the index order); regex filters
    stream narrow rows and stop when the window is full.
    """
    offset, limit = max(0, offset), max(0, limit)
    with Session(engine) as session:
        if query.is_regex and query.text:
            ids, _ = _regex_ids(session, query, offset + limit)
            rows = _rows_by_id(session, ids[offset : offset + limit])
        else:
            id_stmt = _ordered(_where(select(Stack.id), query), query)
            ids = list(session.scalars(id_stmt.offset(offset).limit(limit)))
            rows = _rows_by_id(session, ids)
        total = _count(session, query) if with_total else None
    return StackPage(query, offset, tuple(rows), total)


def _count(session: Session, query: StackQuery) -> int:
    if query.is_regex and query.text:
        ids, _ = _regex_ids(session, query, None)
        return len(ids)
    stmt = _where(select(func.count()).select_from(Stack), query)
    return int(session.scalar(stmt) or 0)


def count_stacks(engine: Engine, query: StackQuery) -> int:
    """How many stacks ``query`` shows."""
    with Session(engine) as session:
        return _count(session, query)


def state_counts_for(engine: Engine, query: StackQuery) -> dict[str, int]:
    """Stacks per state under ``query``'s filter (its own state ignored): the view tabs."""
    counts = {s.value: 0 for s in VIEW_STATES}
    base = query.with_state(None)
    with Session(engine) as session:
        if base.is_regex and base.text:
            pattern = base.pattern
            assert pattern is not None
            stmt = _where(
                select(Stack.state, *_TEXT_COLUMNS).outerjoin(Node, Stack.node_id == Node.id), base
            )
            for row in session.execute(stmt.execution_options(yield_per=_REGEX_BATCH)):
                if row[0] in counts and pattern.search_any(row[1:]):
                    counts[row[0]] += 1
            return counts
        if base.text:
            # One pass of conditional sums: a GROUP BY would walk the state index and look
            # every row up, several times slower than the scan the LIKE needs anyway.
            sums = [func.sum(case((Stack.state == s, 1), else_=0)) for s in counts]
            values = session.execute(_where(select(*sums).select_from(Stack), base)).one()
            return {s: int(v or 0) for s, v in zip(counts, values, strict=True)}
        stmt = select(Stack.state, func.count()).group_by(Stack.state)
        for state, n in session.execute(stmt):
            if state in counts:
                counts[state] = int(n)
    return counts


# ------------------------------------------------------------------- runid distribution


@dataclass(frozen=True)
class RunidDistribution:
    """Images of each runid per node, as on the seed's DataTransfer page.

    ``totals`` counts every image of the runid, placed on a node or not, so a row's
    percentages add up to less than 100 % while some images wait for DataTransfer.
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
        return f"{self.share(runid, node):.1f}% [{n} file{'s' if n != 1 else ''}]"

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


def runid_distribution(engine: Engine) -> RunidDistribution:
    with Session(engine) as session:
        placed = session.execute(
            select(Runid.name, Node.name, func.count(Image.id))
            .join(Runid, Image.runid_id == Runid.id)
            .join(Node, Image.node_id == Node.id)
            .group_by(Runid.name, Node.name)
        ).all()
        totals = dict(
            session.execute(
                select(Runid.name, func.count(Image.id))
                .join(Runid, Image.runid_id == Runid.id)
                .group_by(Runid.name)
            ).all()
        )
    files = {(r, n): int(c) for r, n, c in placed}
    runids = tuple(sorted({r for r, _ in files} | set(totals)))
    nodes = tuple(natural_sorted({n for _, n in files}))
    return RunidDistribution(runids, nodes, files, {k: int(v) for k, v in totals.items()})


# ------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class DbState:
    """One read of what the dashboard shows from dbspica."""

    read_at: datetime
    counts: dict[str, int]
    problems: tuple[dict[str, Any], ...]
    distribution: RunidDistribution


def read_db_state(engine: Engine, problems: int = 100) -> DbState:
    """Counts per state, the newest problems and the runid distribution. Raises
    SQLAlchemyError when dbspica does not answer (the caller keeps its last good state)."""
    with Session(engine) as session:
        rows = session.execute(select(Stack.state, func.count()).group_by(Stack.state)).all()
    counts = {s.value: 0 for s in VIEW_STATES}
    counts.update({state: int(n) for state, n in rows if state in counts})
    return DbState(
        read_at=utcnow(),
        counts=counts,
        problems=tuple(list_problems(engine, limit=problems)),
        distribution=runid_distribution(engine),
    )


@dataclass(frozen=True)
class ConsoleSnapshot:
    """The nodes and dbspica as last seen, each with the time of its last good data.

    ``db`` is the last *good* read; when the latest read failed, ``db_error`` says why and
    ``db`` is older than ``taken_at``: show it as stale. Nodes carry their own ``last_seen``
    and ``last_error`` (see :class:`~spica_core.cluster_snapshot.NodeSnapshot`).
    """

    cluster_name: str
    db_url: str
    taken_at: datetime
    cluster: ClusterSnapshot | None = None
    db: DbState | None = None
    db_error: str | None = None
    db_error_since: datetime | None = None
    #: The monitor whose figures ``cluster`` holds; None when the console polled the nodes.
    monitor: MonitorStatus | None = None

    @property
    def db_stale(self) -> bool:
        return self.db is None or self.db_error is not None

    @property
    def nodes(self) -> tuple[NodeSnapshot, ...]:
        return self.cluster.nodes if self.cluster else ()

    def node(self, name: str | None) -> NodeSnapshot | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    def reachable(self, node: str | None) -> bool:
        """Whether actions on a stack of ``node`` can reach it (unknown counts as yes:
        the operations API checks for real and refuses per stack)."""
        snap = self.node(node)
        return snap is None or snap.liveness.value == "unknown" or snap.liveness.reachable

    def oldest_data(self) -> datetime | None:
        """The time of the oldest piece of data on screen (the header's age)."""
        times = [n.last_seen for n in self.nodes if n.last_seen is not None]
        if self.db is not None:
            times.append(self.db.read_at)
        return min(times) if times else None


# ------------------------------------------------------------------------- stack detail


LineStatus = Literal["done", "failed", "running", "not run"]


@dataclass(frozen=True)
class CommandLine:
    number: int
    command: str | None
    status: LineStatus
    exit_code: int | None = None
    attempt: int | None = None
    started_at: str | None = None
    ended_at: str | None = None


def command_lines(detail: StackDetail) -> list[CommandLine]:
    """Every command line of a stack with its status, from dbspica's runs and progress.

    The latest attempt of a line decides; a line without a run is done when it is at or
    before ``progress`` (the node's resume point), failed when it is the failed line of a
    failed stack, running when it is the next line of a running stack, else not run.
    """
    stack = detail.stack
    latest: dict[int, dict[str, Any]] = {}
    for run in detail.runs:
        current = latest.get(run["line"])
        if current is None or (run["attempt"], run["started_at"] or "") >= (
            current["attempt"],
            current["started_at"] or "",
        ):
            latest[run["line"]] = run
    count = max([stack.lines, *latest.keys()], default=0)
    out: list[CommandLine] = []
    for number in range(1, count + 1):
        run = latest.get(number)
        status: LineStatus
        if run is not None and run["exit_code"] is not None:
            status = "done" if run["exit_code"] == 0 else "failed"
        elif run is not None and stack.state == StackState.RUNNING:
            status = "running"
        elif stack.state == StackState.FAILED and number == stack.failed_line:
            status = "failed"
        elif number <= stack.progress:
            status = "done"
        elif stack.state == StackState.RUNNING and number == stack.progress + 1:
            status = "running"
        elif stack.state == StackState.COMPLETED:
            status = "done"
        else:
            status = "not run"
        out.append(
            CommandLine(
                number,
                run["command"] if run else None,
                status,
                run["exit_code"] if run else None,
                run["attempt"] if run else None,
                run["started_at"] if run else None,
                run["ended_at"] if run else None,
            )
        )
    return out


@dataclass(frozen=True)
class LogTail:
    """The end of one command line's log as the node returned it, or why not."""

    stack: str
    node: str | None
    line: int | None = None
    path: str | None = None
    text: str = ""
    truncated: bool = False
    error: str | None = None
    fetched_at: datetime = field(default_factory=utcnow)


async def fetch_log_tail(
    pool: NodePool, node: str | None, stack: str, line: int | None = None, lines: int = 40
) -> LogTail:
    """The log tail of ``stack``'s line ``line`` (default: the failed line, else the latest)
    from its node; node trouble is returned in ``error``, never raised."""
    from spica_core.errors import SpicaError
    from spica_core.node_protocol import ProtocolError, Verb

    if node is None:
        return LogTail(stack, node, error="the stack has no node in dbspica")
    args: dict[str, Any] = {"stack": stack, "lines": lines}
    if line is not None:
        args["line"] = line
    try:
        result = await pool.call(node, Verb.TAIL, args)
    except ProtocolError as exc:
        return LogTail(stack, node, line, error=f"node {node}: {exc.message}")
    except (SpicaError, OSError) as exc:
        return LogTail(stack, node, line, error=str(exc))
    except Exception as exc:  # AgentMissing and other node trouble: shown, never raised
        return LogTail(stack, node, line, error=f"node {node}: {exc}")
    return LogTail(
        stack,
        node,
        result.get("line"),
        result.get("path"),
        result.get("text") or "",
        bool(result.get("truncated")),
    )

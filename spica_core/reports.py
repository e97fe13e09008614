"""Read-only reports of dbspica, shared by the CLI and the console.

Each row type owns its JSON shape (``to_json``): the keys documented in the README are these,
and they only ever grow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.orm import Session, selectinload

from spica_core.db.models import Node, Problem, Stack, StackApp, StackFile, StackRun
from spica_core.db.types import utcnow
from spica_core.errors import NotFound, UsageError
from spica_core.names import validate_name
from spica_core.patterns import UserPattern, compile_pattern
from spica_core.states import StackState
from spica_core.text import require_utf8


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, the one time format of ``--json``."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: datetime | None = None, option: str = "--since") -> datetime:
    """``2h``, ``3d``, ``90m`` (ago) or an ISO date/time (UTC unless it says otherwise), as
    an aware UTC time; UsageError naming ``option`` when it is not one or out of range."""
    now = now or utcnow()
    m = _RELATIVE.match(value)
    shown = value if len(value) <= 60 else value[:57] + "..."
    try:
        if m:
            return now - timedelta(seconds=int(m.group(1)) * _SECONDS[m.group(2)])
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=now.tzinfo)
        return parsed.astimezone(UTC)
    except ValueError:
        raise UsageError(
            f"{option} {shown!r}: expected a duration like 2h, 3d, 30m or an ISO date/time"
        ) from None
    except OverflowError:
        raise UsageError(f"{option} {shown!r}: out of range (years 1 to 9999, UTC)") from None


@dataclass(frozen=True)
class StackFilter:
    """A selection of stacks; every field narrows it. ``match`` is a regular expression (RE2
    syntax, see :mod:`spica_core.patterns`) searched in the stack's name and error message."""

    state: StackState | None = None
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
        self.pattern  # noqa: B018 - a bad pattern is a UsageError here, before any query

    @cached_property
    def pattern(self) -> UserPattern | None:
        return None if self.match is None else compile_pattern(self.match, "--match")

    def statement(self) -> Select[tuple[Stack]]:
        stmt = select(Stack).options(selectinload(Stack.node))
        if self.state is not None:
            stmt = stmt.where(Stack.state == self.state.value)
        if self.node is not None:
            stmt = stmt.join(Node, Stack.node_id == Node.id).where(Node.name == self.node)
        for column, value in (
            (Stack.step, self.step),
            (Stack.runid, self.runid),
            (Stack.filter, self.filter),
            (Stack.release, self.release),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        return stmt.order_by(Stack.state, Stack.priority.desc(), Stack.name)

    def accepts(self, stack: Stack) -> bool:
        pattern = self.pattern
        return pattern is None or pattern.search_any((stack.name, stack.error))


@dataclass(frozen=True)
class StackRow:
    name: str
    step: str
    survey: str | None
    filter: str | None
    release: str | None
    runid: str | None
    node: str | None
    state: str
    priority: int
    ranking: str | None
    lines: int
    progress: int
    failed_line: int | None
    exit_code: int | None
    error: str | None
    created_at: datetime | None
    launched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, s: Stack) -> StackRow:
        return cls(
            name=s.name,
            step=s.step,
            survey=s.survey,
            filter=s.filter,
            release=s.release,
            runid=s.runid,
            node=s.node.name if s.node else None,
            state=s.state,
            priority=s.priority,
            ranking=s.ranking,
            lines=s.lines,
            progress=s.progress,
            failed_line=s.failed_line,
            exit_code=s.exit_code,
            error=s.error,
            created_at=s.created_at,
            launched_at=s.launched_at,
            started_at=s.started_at,
            finished_at=s.finished_at,
            updated_at=s.updated_at,
        )

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("created_at", "launched_at", "started_at", "finished_at", "updated_at"):
            out[key] = iso(out[key])
        return out


@dataclass(frozen=True)
class StackDetail:
    stack: StackRow
    files: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    apps: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.stack.to_json(), "files": self.files, "runs": self.runs, "apps": self.apps}


def iter_stacks(session: Session, flt: StackFilter, limit: int | None = None) -> Iterator[Stack]:
    """Stacks matching ``flt``, streamed (the regex is applied here, not in SQL)."""
    count = 0
    stmt = flt.statement()
    if flt.match is None and limit is not None:
        stmt = stmt.limit(limit)
    for stack in session.scalars(stmt.execution_options(yield_per=1000)):
        if flt.accepts(stack):
            yield stack
            count += 1
            if limit is not None and count >= limit:
                return


def list_stacks(engine: Engine, flt: StackFilter, limit: int | None = None) -> list[StackRow]:
    with Session(engine) as session:
        return [StackRow.of(s) for s in iter_stacks(session, flt, limit)]


def stack_detail(engine: Engine, name: str) -> StackDetail:
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
        if stack is None:
            raise NotFound("stack", name)
        files = [
            {"image": f.image.filename, "role": f.role, "filter": f.image.filter}
            for f in sorted(stack.files, key=lambda f: (f.role, f.image.filename))
        ]
        runs = [run_json(r) for r in stack.runs]
        apps = [{"name": a.application.name, "version": a.version} for a in stack.apps]
        return StackDetail(StackRow.of(stack), files, runs, apps)


def run_json(run: StackRun) -> dict[str, Any]:
    return {
        "line": run.line,
        "attempt": run.attempt,
        "command": run.command,
        "node": run.node,
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "exit_code": run.exit_code,
    }


def state_counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        rows = session.execute(select(Stack.state, func.count()).group_by(Stack.state)).all()
    counts = {s.value: 0 for s in StackState if s is not StackState.REMOVED}
    counts.update({state: n for state, n in rows})
    return counts


def problem_json(p: Problem) -> dict[str, Any]:
    return {
        "id": p.id,
        "created_at": iso(p.created_at),
        "kind": p.kind,
        "node": p.node,
        "stack": p.stack,
        "runid": p.runid,
        "filter": p.filter,
        "release": p.release,
        "message": p.message,
        "resolved": p.resolved,
    }


def list_problems(
    engine: Engine,
    since: datetime | None = None,
    kind: str | None = None,
    include_resolved: bool = True,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Problems newest first."""
    stmt = select(Problem).order_by(Problem.created_at.desc(), Problem.id.desc())
    if since is not None:
        stmt = stmt.where(Problem.created_at >= since)
    if kind is not None:
        stmt = stmt.where(Problem.kind == kind)
    if not include_resolved:
        stmt = stmt.where(Problem.resolved.is_(False))
    if limit is not None:
        stmt = stmt.limit(limit)
    with Session(engine) as session:
        return [problem_json(p) for p in session.scalars(stmt)]


def node_json(n: Node) -> dict[str, Any]:
    return {
        "name": n.name,
        "host": n.host,
        "port": n.port,
        "user": n.user,
        "root": n.root,
        "cpus": n.cpus,
        "ram_gb": n.ram_gb,
        "status": n.status,
        "last_seen": iso(n.last_seen),
        "last_error": n.last_error,
        "disks": [
            {
                "partition": d.partition,
                "total_bytes": d.total_bytes,
                "free_bytes": d.free_bytes,
                "reserved_bytes": d.reserved_bytes,
                "virtual_free_bytes": d.virtual_free_bytes,
                "updated_at": iso(d.updated_at),
            }
            for d in sorted(n.disks, key=lambda d: d.partition)
        ],
    }


def list_nodes(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        nodes = session.scalars(select(Node).options(selectinload(Node.disks)).order_by(Node.name))
        return [node_json(n) for n in nodes]

"""The shapes of what dbspica reports, shared by the CLI and the console.

Each row type owns its JSON shape (``to_json``): the keys documented in the README are these,
and they only ever grow. The queries that fill them are the read model
(:mod:`spica_core.read_model`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from spica_core.db.models import Node, Problem, Stack, StackRun
from spica_core.db.types import utcnow
from spica_core.errors import UsageError

if TYPE_CHECKING:
    pass


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
    #: The recorded results (:mod:`spica_core.read_model.results`); None until recorded.
    result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.stack.to_json(),
            "files": self.files,
            "runs": self.runs,
            "apps": self.apps,
            "result": self.result,
        }


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

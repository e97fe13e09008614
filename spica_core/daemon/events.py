"""What a daemon tells dbspica: one typed event per fact, journalled as a JSON line.

The runner and the service build these; :class:`~spica_core.daemon.replay.DaemonDb` appends
each to the journal (``{"seq", "kind", "node", "at", …fields}``) before going on, and
:mod:`spica_core.daemon.mirror` applies them to dbspica. The ``kind`` tags and field names
are the journal's format: entries already on disk, written before these types existed, read
back as the same events (new fields only ever come with a default).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class Claimed:
    """pending → running: the daemon claimed the stack and starts after ``progress``."""

    kind: ClassVar[str] = "claimed"
    stack: str
    attempt: int
    progress: int
    lines: int


@dataclass(frozen=True, kw_only=True)
class LineStarted:
    """A command line started (its ``stack_run`` row)."""

    kind: ClassVar[str] = "line_started"
    stack: str
    line: int
    attempt: int
    command: str


@dataclass(frozen=True, kw_only=True)
class LineEnded:
    """A command line ended; ``progress`` when it succeeded (the new resume point)."""

    kind: ClassVar[str] = "line_finished"
    stack: str
    line: int
    attempt: int
    exit_code: int
    progress: int | None = None


@dataclass(frozen=True, kw_only=True)
class UnitVersions:
    """The release's applications and the versions their binaries here reported when the
    daemon claimed the stack (its ``stack_app`` rows)."""

    kind: ClassVar[str] = "unit_versions"
    stack: str
    versions: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class Completed:
    """running → completed."""

    kind: ClassVar[str] = "completed"
    stack: str
    lines: int


@dataclass(frozen=True, kw_only=True)
class _Failure:
    stack: str
    message: str
    #: The line that failed (None: before any line ran), and its exit code.
    line: int | None = None
    exit_code: int | None = None


@dataclass(frozen=True, kw_only=True)
class Failed(_Failure):
    """running → failed, and why."""

    kind: ClassVar[str] = "failed"
    attempt: int | None = None
    progress: int | None = None


@dataclass(frozen=True, kw_only=True)
class Rejected(_Failure):
    """pending → failed: stack files that cannot run."""

    kind: ClassVar[str] = "rejected"


@dataclass(frozen=True, kw_only=True)
class Released:
    """running → pending as the daemon stops: resumable after ``progress``."""

    kind: ClassVar[str] = "released"
    stack: str
    progress: int


@dataclass(frozen=True, kw_only=True)
class Recovered:
    """A stale claim recovered (running → ``state``), and the run it ended, if any."""

    kind: ClassVar[str] = "recovered"
    stack: str
    state: str
    message: str
    line: int | None = None
    attempt: int | None = None
    run_line: int | None = None
    run_exit_code: int | None = None


@dataclass(frozen=True, kw_only=True)
class CheckFailed:
    """A pending stack's check failed: it stays pending; ``problem`` files a problem row."""

    kind: ClassVar[str] = "check_failed"
    stack: str
    reason: str
    problem: bool = False


@dataclass(frozen=True, kw_only=True)
class NodeProblem:
    """A problem of the node's queue, not of a stack's run: no stack row is made or changed."""

    kind: ClassVar[str] = "node_problem"
    message: str
    stack: str | None = None


MirrorEvent = (
    Claimed
    | LineStarted
    | LineEnded
    | UnitVersions
    | Completed
    | Failed
    | Rejected
    | Released
    | Recovered
    | CheckFailed
    | NodeProblem
)

EVENT_TYPES: tuple[type[MirrorEvent], ...] = (
    Claimed,
    LineStarted,
    LineEnded,
    UnitVersions,
    Completed,
    Failed,
    Rejected,
    Released,
    Recovered,
    CheckFailed,
    NodeProblem,
)
_BY_KIND: dict[str, type[MirrorEvent]] = {t.kind: t for t in EVENT_TYPES}
#: The entry kinds a daemon writes (documentation and tests).
KINDS = tuple(_BY_KIND)
#: Keys of a journal entry that are not the event's own.
ENVELOPE = ("seq", "kind", "node", "at")


def to_fields(event: MirrorEvent) -> dict[str, Any]:
    """The event as a journal entry's fields, its ``kind`` tag first."""
    return {"kind": event.kind, **asdict(event)}


def from_entry(entry: dict[str, Any]) -> MirrorEvent:
    """The event a journal entry holds; ValueError naming the kind or the field it lacks.

    Keys the event does not know (an entry of a later version) are left aside, as the
    handlers reading entries by key always did.
    """
    kind = entry.get("kind")
    cls = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown journal entry kind {kind!r}")
    args: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in entry:
            args[f.name] = entry[f.name]
        elif f.default is MISSING:
            raise ValueError(f"journal entry {entry.get('seq')} ({kind}): no {f.name!r}")
    return cls(**args)

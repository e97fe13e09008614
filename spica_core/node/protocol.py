"""The typed node protocol: every record a node keeps and every verb's arguments and result.

Both ends decode with these types (msgspec): an unknown field or a wrong type is refused with
the field named, on the agent (``bad_args``) and on the console alike. Records are what the
node's files hold (queue records, locks, removals, the heartbeat); the wire views add what the
agent saw of them (``alive``). Nothing shaped as ``dict[str, Any]`` crosses the node boundary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

from spica_core.node_protocol import (
    DEFAULT_TAIL_LINES,
    MAX_REQUEST_BYTES,
    MAX_TAIL_BYTES,
    MAX_TAIL_LINES,
    PROTOCOL_VERSION,
    ErrorCode,
    ProtocolError,
    Verb,
)
from spica_core.states import StackState

__all__ = [
    "DEFAULT_TAIL_LINES",
    "MAX_REQUEST_BYTES",
    "MAX_TAIL_BYTES",
    "MAX_TAIL_LINES",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "ProtocolError",
    "Verb",
]

MAX_APPLICATIONS = 256
MAX_BINARY_CHARS = 4096

NonNegative = Annotated[int, Meta(ge=0)]


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every shape of the protocol: immutable, keyword-built, strict on decoding."""


# ------------------------------------------------------------------ records (node files)


class LaunchRecord(Message):
    """``queue/<stack>.spica``; legacy launchers leave the file empty."""

    stack: str
    priority: int
    launched_at: str
    by: str


class ClaimRecord(Message):
    """``queue/<stack>.processing``: who runs it, and the launch it claimed."""

    pid: int
    host: str
    boot_id: str
    started_at: str
    daemon_pid: int | None = None
    attempt: int | None = None
    priority: int | None = None
    launched_at: str | None = None
    launched_by: str | None = None


class ErrorRecord(Message):
    """``queue/<stack>.error``: where a requeue resumes and what the operator sees."""

    line: int | None
    exit_code: int | None
    message: str
    log_tail: str | None = None


class LockRecord(Message):
    """``locks/<partition>.qfin.lock``; legacy locks are empty files."""

    pid: int
    host: str
    boot_id: str
    acquired_at: str | None = None
    stack: str | None = None


class RemovedRecord(Message):
    """``removed/<stack>.json``: who removed the stack, from which state."""

    stack: str
    by: str
    removed_at: str
    state: str
    stack_id: int | None = None


class HeartbeatRecord(Message):
    """``daemon.heartbeat``; its freshness is the file's mtime, not ``time``."""

    pid: int
    host: str
    time: str


# ------------------------------------------------------------------ wire views


class ClaimSeen(ClaimRecord, kw_only=True):
    """A claim as the agent found it: is its process (and its daemon) alive."""

    alive: bool
    daemon_alive: bool | None = None


class QueueEntry(Message):
    stack: str
    state: StackState
    mtime: datetime | None
    launch: LaunchRecord | None = None
    claim: ClaimSeen | None = None
    error: ErrorRecord | None = None
    malformed: str | None = None
    progress: int | None = None
    lines: int | None = None
    attempt: int | None = None


class PartitionUsage(Message):
    name: str
    total_bytes: int | None
    free_bytes: int | None
    used_bytes: int | None
    virtual: bool
    exists: bool
    error: str | None = None


class Heartbeat(Message):
    pid: int | None
    host: str | None
    time: str | None
    age_seconds: float
    malformed: str | None = None


class QfinLock(Message):
    partition: str
    holder: LockRecord | None
    alive: bool
    malformed: str | None = None


class Orphan(Message):
    """A command line still running under a dead claim: what an unlock kills."""

    line: int
    pgid: int
    attempt: int | None
    started_at: str | None
    command: str | None


class EndedRun(Message):
    """The ``stack_run`` row an unlock ends."""

    attempt: int
    line: int | None
    exit_code: int | None
    ended_at: str


class Deletion(Message):
    path: str
    files: int
    bytes: int


class StackChange(Message):
    """What a move (launch, requeue, unlock, remove) does, or did, to one stack on its node;
    the fields a move does not use stay None."""

    stack: str
    from_: str = msgspec.field(name="from")
    to: str
    rename: tuple[str | None, str] | None = None
    create: str | None = None
    from_start: bool | None = None
    resume_line: int | None = None
    claim: ClaimRecord | None = None
    orphan: Orphan | None = None
    ended_run: EndedRun | None = None
    delete: list[Deletion] | None = None
    bytes: int | None = None
    #: The stack's claim counter as the agent answered (reconcile's evidence).
    attempt: int | None = None


# ------------------------------------------------------------------ verbs

R = TypeVar("R")


class Args(Message, Generic[R]):
    """A verb's arguments; ``VERB`` names it and ``RESULT`` is the type of its answer."""

    VERB: ClassVar[Verb]
    RESULT: ClassVar[type]


class PingResult(Message):
    time: str


class PingArgs(Args[PingResult]):
    VERB = Verb.PING
    RESULT = PingResult


class PartitionArg(Message):
    name: str
    capacity: NonNegative | None = None


class StatusResult(Message):
    root: str
    host: str
    boot_id: str | None
    time: str
    load: list[float] | None
    partitions: list[PartitionUsage]
    #: None when the client already holds ``queue_version`` of the listing.
    queue: list[QueueEntry] | None
    queue_version: str
    queue_unchanged: bool
    counts: dict[str, int]
    heartbeat: Heartbeat | None
    qfin_locks: list[QfinLock]


class StatusArgs(Args[StatusResult]):
    VERB = Verb.STATUS
    RESULT = StatusResult
    #: None: every ``raid*`` directory under the root.
    partitions: list[PartitionArg] | None = None
    states: list[StackState] | None = None
    queue_version: str | None = None


class TailResult(Message):
    stack: str
    line: int
    path: str
    size: int
    text: str
    truncated: bool


class TailArgs(Args[TailResult]):
    VERB = Verb.TAIL
    RESULT = TailResult
    stack: str
    line: Annotated[int, Meta(ge=1, le=10**9)] | None = None
    lines: Annotated[int, Meta(ge=1, le=MAX_TAIL_LINES)] | None = None
    bytes: Annotated[int, Meta(ge=1, le=MAX_TAIL_BYTES)] | None = None


class Application(Message):
    name: str
    binary: Annotated[str, Meta(min_length=1, max_length=MAX_BINARY_CHARS)]


class BinaryVersion(Message):
    name: str
    binary: str
    path: str | None
    exists: bool
    size: int | None
    sha256: str | None


class VersionsResult(Message):
    binaries: list[BinaryVersion]


class VersionsArgs(Args[VersionsResult]):
    VERB = Verb.VERSIONS
    RESULT = VersionsResult
    applications: Annotated[list[Application], Meta(max_length=MAX_APPLICATIONS)]


class StageResult(Message):
    stack: str
    lines: int
    commands: str


class StageArgs(Args[StageResult]):
    """Write ``commands.sh`` (and ``inputs``) of a planned stack; commands travel in base64."""

    VERB = Verb.STAGE
    RESULT = StageResult
    stack: str
    commands_b64: str
    inputs: list[str] | None = None
    dry_run: bool = False


class LaunchArgs(Args[StackChange]):
    VERB = Verb.LAUNCH
    RESULT = StackChange
    stack: str
    by: str
    priority: int = 0
    dry_run: bool = False


class RequeueArgs(Args[StackChange]):
    VERB = Verb.REQUEUE
    RESULT = StackChange
    stack: str
    by: str
    priority: int = 0
    from_start: bool = False
    dry_run: bool = False


class UnlockArgs(Args[StackChange]):
    VERB = Verb.UNLOCK
    RESULT = StackChange
    stack: str
    by: str
    to: Literal["failed", "pending"] = "failed"
    priority: int = 0
    dry_run: bool = False


class RemoveArgs(Args[StackChange]):
    VERB = Verb.REMOVE
    RESULT = StackChange
    stack: str
    by: str
    purge: list[str] = []
    stack_id: NonNegative | None = None
    dry_run: bool = False


class UnlockQfinResult(Message):
    partition: str
    delete: list[str]
    holder: LockRecord | None


class UnlockQfinArgs(Args[UnlockQfinResult]):
    VERB = Verb.UNLOCK_QFIN
    RESULT = UnlockQfinResult
    partition: str
    by: str
    dry_run: bool = False


#: Every verb's argument type: the agent decodes a request's args with it.
ARGS: dict[Verb, type[Args[object]]] = {
    cls.VERB: cls
    for cls in (
        PingArgs,
        StatusArgs,
        TailArgs,
        VersionsArgs,
        StageArgs,
        LaunchArgs,
        RequeueArgs,
        UnlockArgs,
        RemoveArgs,
        UnlockQfinArgs,
    )
}


# ------------------------------------------------------------------ envelope


class Hello(Message):
    hello: Literal["spica-agent"]
    protocol: int
    version: str
    root: str
    host: str
    pid: int
    boot_id: str | None


class ErrorBody(Message):
    code: str
    message: str


class Request(Message):
    id: int | str
    verb: str
    args: msgspec.Raw = msgspec.Raw(b"{}")


class Response(Message):
    id: int | str | None
    ok: bool
    result: msgspec.Raw | None = None
    error: ErrorBody | None = None

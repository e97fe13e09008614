"""The typed node protocol: the one definition of what the console and the node agent say.

Transport: JSON lines (UTF-8) over the stdin/stdout of ``spica node serve`` running in an SSH
channel. The agent first writes a :class:`Hello`; then each request line gets exactly one
response line, in order, carrying the request's id::

    agent:   {"hello": "spica-agent", "protocol": 2, "version": "0.1.0", "root": "/data/spica", ...}
    client:  {"id": 7, "verb": "status", "args": {"partitions": [{"name": "raid1"}]}}
    agent:   {"id": 7, "ok": true, "result": {...}}
    agent:   {"id": 8, "ok": false, "error": {"code": "bad_name", "message": "..."}}

Every record a node keeps and every verb's arguments and result is a msgspec Struct here; both
ends decode with these types: an unknown field or a wrong type is refused with the field named,
on the agent (``bad_args``) and on the console (``bad_answer``) alike. Records are what the
node's files hold (queue records, locks, removals, the heartbeat); the wire views add what the
agent saw of them (``alive``). Nothing shaped as ``dict[str, Any]`` crosses the node boundary.
Errors are always structured responses (never a traceback on the wire); after any error the
agent keeps serving.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

from spica_core.node.layout import MAX_COMMANDS_BYTES
from spica_core.states import StackState

#: 2: typed messages (msgspec); ``versions`` answers ``{"binaries": [...]}``. The ``moves``
#: verb came later within 2: no old verb changed meaning, and an agent without it answers
#: ``unknown_verb`` having changed nothing, so a client may then send the moves one by one.
#: ``versions`` later gained its optional ``version`` argument and answer field the same way.
PROTOCOL_VERSION = 2
HELLO: Final = "spica-agent"

#: A request line longer than this is refused (``too_large``) without being parsed. It
#: leaves room for the largest ``stage``: commands of MAX_COMMANDS_BYTES sent in base64
#: (``commands_b64``: 4 bytes per 3, whatever the text holds), plus the other arguments.
MAX_REQUEST_BYTES = 64 * 1024 + 4 * -(-MAX_COMMANDS_BYTES // 3)
#: At most this many moves in one ``moves`` request; a client splits larger batches (and
#: keeps each request line under MAX_REQUEST_BYTES).
MAX_MOVES = 1000
#: The bytes of a ``moves`` request's items together: the line less room for the envelope.
MAX_MOVE_BYTES = MAX_REQUEST_BYTES - 256
#: Bounds of ``tail``.
DEFAULT_TAIL_LINES = 50
MAX_TAIL_LINES = 5000
MAX_TAIL_BYTES = 256 * 1024


class Verb(StrEnum):
    PING = "ping"
    STATUS = "status"
    TAIL = "tail"
    VERSIONS = "versions"
    FITS_HEADERS = "fits_headers"  # ingestion: two headers, size, checksum of FITS files
    # Operator actions (spica_core.node.actions); each takes "dry_run".
    STAGE = "stage"  # write commands.sh of a planned stack
    LAUNCH = "launch"  # planned -> pending
    REQUEUE = "requeue"  # failed -> pending
    UNLOCK = "unlock"  # stale running -> failed | pending
    UNLOCK_QFIN = "unlock_qfin"  # remove a dead holder's QFin lock
    REMOVE = "remove"  # queue file, stack dir, listed inputs
    MOVES = "moves"  # many launch/requeue/unlock/remove in one request, each answered
    # DataTransfer (spica_core.node.transfer_files): a copy lands under a hidden partial
    # name and is renamed into place only once the node's checksum matches the source's.
    CHECKSUM = "checksum"  # size and xxh128 of files under the root
    PREPARE = "prepare"  # where a copy writes its partial file (resume or start afresh)
    PLACE = "place"  # check the partial's checksum, rename it into place (or delete it)


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"  # not JSON, not an object, missing id/verb
    TOO_LARGE = "too_large"  # request line over MAX_REQUEST_BYTES
    UNKNOWN_VERB = "unknown_verb"
    BAD_ARGS = "bad_args"  # args of the wrong shape or type
    BAD_NAME = "bad_name"  # a stack/partition name outside spica_core.names
    OUTSIDE_ROOT = "outside_root"  # a path (or symlink) leading out of the spica root
    NOT_FOUND = "not_found"
    WRONG_STATE = "wrong_state"  # the stack is not (or no longer) where the action needs it
    INTERNAL = "internal"  # an unexpected failure, described in one line
    #: Raised on the console: the agent's hello or answer does not fit this SPICA's protocol.
    BAD_ANSWER = "bad_answer"


class ProtocolError(Exception):
    """A structured error, raised on either end; ``code`` is an :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.message = message
        super().__init__(f"{code}: {message}")


MAX_APPLICATIONS = 256
MAX_BINARY_CHARS = 4096

NonNegative = Annotated[int, Meta(ge=0)]
#: A queue priority as operators give it.
Priority = Annotated[int, Meta(ge=-(10**6), le=10**6)]
#: Who asks for a move: an operator name, written into the node's records.
Operator = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.@+-]{1,64}$")]


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every shape of the protocol: immutable, keyword-built, strict on decoding."""


# ------------------------------------------------------------------ records (node files)


class LaunchRecord(Message, frozen=True):
    """``queue/<stack>.spica``; legacy launchers leave the file empty."""

    stack: str
    priority: int
    launched_at: str
    by: str


class ClaimRecord(Message, frozen=True):
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


class ErrorRecord(Message, frozen=True):
    """``queue/<stack>.error``: where a requeue resumes and what the operator sees."""

    line: int | None
    exit_code: int | None
    message: str
    log_tail: str | None = None


class LockRecord(Message, frozen=True):
    """``locks/<partition>.qfin.lock``; legacy locks are empty files."""

    pid: int
    host: str
    boot_id: str
    acquired_at: str | None = None
    stack: str | None = None


class UnitRecord(Message, frozen=True, omit_defaults=True):
    """``stacks/<stack>/unit.json``, staged with the commands: what the daemon must know of
    a unit before it claims it (a ``qfin`` unit holds its partition's QFin lock while it
    runs), and what a remove takes with it. A unit staged without one is an ordinary unit.
    Fields at their default are not written, so a record reads the same to older agents."""

    step: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")]
    #: The raid partition the unit works on (its QFin lock), if any.
    partition: str | None = None
    #: The unit's own work directory beside ``stacks/<stack>/`` (a co-add's, on its
    #: partition), relative to the node root: removed with the stack. Named after the stack,
    #: below a ``stacks`` directory (:func:`~spica_core.node.layout.unit_workdir_problem`).
    workdir: str | None = None


class RemovedRecord(Message, frozen=True):
    """``removed/<stack>.json``: who removed the stack, from which state."""

    stack: str
    by: str
    removed_at: str
    state: str
    stack_id: int | None = None


class HeartbeatRecord(Message, frozen=True):
    """``daemon.heartbeat``; its freshness is the file's mtime, not ``time``."""

    pid: int
    host: str
    time: str


# ------------------------------------------------------------------ wire views


class ClaimSeen(ClaimRecord, kw_only=True, frozen=True):
    """A claim as the agent found it: is its process (and its daemon) alive."""

    alive: bool
    daemon_alive: bool | None = None


class QueueEntry(Message, frozen=True):
    stack: str
    state: StackState
    #: The queue file's mtime, as every time on the wire: ISO 8601 UTC to the millisecond.
    mtime: str | None
    launch: LaunchRecord | None = None
    claim: ClaimSeen | None = None
    error: ErrorRecord | None = None
    malformed: str | None = None
    progress: int | None = None
    lines: int | None = None
    attempt: int | None = None


class PartitionUsage(Message, frozen=True):
    name: str
    total_bytes: int | None
    free_bytes: int | None
    used_bytes: int | None
    virtual: bool
    exists: bool
    error: str | None = None


class Heartbeat(Message, frozen=True):
    pid: int | None
    host: str | None
    time: str | None
    age_seconds: float
    malformed: str | None = None


class QfinLock(Message, frozen=True):
    partition: str
    holder: LockRecord | None
    alive: bool
    malformed: str | None = None


class Orphan(Message, frozen=True):
    """A command line still running under a dead claim: what an unlock kills."""

    line: int
    pgid: int
    attempt: int | None
    started_at: str | None
    command: str | None


class EndedRun(Message, frozen=True):
    """The ``stack_run`` row an unlock ends."""

    attempt: int
    line: int | None
    exit_code: int | None
    ended_at: str


class Deletion(Message, frozen=True):
    path: str
    files: int
    bytes: int


class StackChange(Message, frozen=True):
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


#: The slowest a node's disk is taken to read or flush: a verb that hashes a file whole is
#: given this long per byte beyond the call timeout (a 700 MB exposure on a busy raid).
SLOW_DISK_BYTES_PER_S = 20 * 1024 * 1024
#: Beyond the call timeout, for a verb whose reading the console cannot size (a page of
#: ``fits_headers``, a ``checksum`` of files it has not seen).
UNSIZED_READ_S = 300.0


class Args(Message, Generic[R], frozen=True):
    """A verb's arguments; ``VERB`` names it and ``RESULT`` is the type of its answer."""

    VERB: ClassVar[Verb]
    RESULT: ClassVar[type]

    def timeout(self, call_timeout: float) -> float:
        """Seconds to wait for the answer, ``call_timeout`` being the configured one: more
        for the verbs that read files whole, so a large file is never given up as lost."""
        return call_timeout


def _reading(call_timeout: float, size: int) -> float:
    return call_timeout + size / SLOW_DISK_BYTES_PER_S


class PingResult(Message, frozen=True):
    time: str


class PingArgs(Args[PingResult], frozen=True):
    VERB = Verb.PING
    RESULT = PingResult


class PartitionArg(Message, frozen=True):
    name: str
    capacity: NonNegative | None = None


class StatusResult(Message, frozen=True):
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


class StatusArgs(Args[StatusResult], frozen=True):
    VERB = Verb.STATUS
    RESULT = StatusResult
    #: None: every ``raid*`` directory under the root.
    partitions: list[PartitionArg] | None = None
    states: list[StackState] | None = None
    queue_version: str | None = None


class TailResult(Message, frozen=True):
    stack: str
    line: int
    path: str
    size: int
    text: str
    truncated: bool


class TailArgs(Args[TailResult], frozen=True):
    VERB = Verb.TAIL
    RESULT = TailResult
    stack: str
    line: Annotated[int, Meta(ge=1, le=10**9)] | None = None
    lines: Annotated[int, Meta(ge=1, le=MAX_TAIL_LINES)] | None = None
    bytes: Annotated[int, Meta(ge=1, le=MAX_TAIL_BYTES)] | None = None


class Application(Message, frozen=True):
    name: str
    binary: Annotated[str, Meta(min_length=1, max_length=MAX_BINARY_CHARS)]


class BinaryVersion(Message, frozen=True, omit_defaults=True):
    name: str
    binary: str
    path: str | None
    exists: bool
    size: int | None
    sha256: str | None
    #: What the binary's version flag printed (``2.25.0``), when the client asked for it and
    #: the binary told; left out otherwise, so an older client still decodes the answer.
    version: str | None = None


class VersionsResult(Message, frozen=True):
    binaries: list[BinaryVersion]


class VersionsArgs(Args[VersionsResult], frozen=True, omit_defaults=True):
    VERB = Verb.VERSIONS
    RESULT = VersionsResult
    applications: Annotated[list[Application], Meta(max_length=MAX_APPLICATIONS)]
    #: Also run each binary's version flag (cached by the agent until the binary changes).
    #: Sent only when true: an older agent, which refuses it (``bad_args``), is then asked
    #: again without it.
    version: bool = False


class StageResult(Message, frozen=True):
    stack: str
    lines: int
    commands: str


class StageArgs(Args[StageResult], frozen=True, omit_defaults=True):
    """Write ``commands.sh`` (and ``inputs``, ``unit.json``) of a planned stack; commands
    travel in base64. Defaults are left out on the wire: an agent older than ``unit`` still
    stages a unit sent without one."""

    VERB = Verb.STAGE
    RESULT = StageResult
    stack: str
    #: The exact bytes in base64: a size the request limit holds whatever the text is.
    commands_b64: str | None = None
    #: The commands as text, as older clients send them (one of the two is required).
    commands: str | None = None
    inputs: list[str] | None = None
    unit: UnitRecord | None = None
    dry_run: bool = False


class LaunchArgs(Args[StackChange], frozen=True):
    VERB = Verb.LAUNCH
    RESULT = StackChange
    stack: str
    by: Operator
    priority: Priority = 0
    dry_run: bool = False


class RequeueArgs(Args[StackChange], frozen=True):
    VERB = Verb.REQUEUE
    RESULT = StackChange
    stack: str
    by: Operator
    priority: Priority = 0
    from_start: bool = False
    dry_run: bool = False


class UnlockArgs(Args[StackChange], frozen=True):
    VERB = Verb.UNLOCK
    RESULT = StackChange
    stack: str
    by: Operator
    to: Literal["failed", "pending"] = "failed"
    priority: Priority = 0
    dry_run: bool = False


class RemoveArgs(Args[StackChange], frozen=True):
    VERB = Verb.REMOVE
    RESULT = StackChange
    stack: str
    by: Operator = "unknown"
    purge: list[str] = []
    stack_id: NonNegative | None = None
    dry_run: bool = False


# A ``moves`` item is one of the four moves with its verb named in the item itself.


class LaunchMove(LaunchArgs, tag="launch", tag_field="verb", frozen=True):
    pass


class RequeueMove(RequeueArgs, tag="requeue", tag_field="verb", frozen=True):
    pass


class UnlockMove(UnlockArgs, tag="unlock", tag_field="verb", frozen=True):
    pass


class RemoveMove(RemoveArgs, tag="remove", tag_field="verb", frozen=True):
    pass


Move = LaunchMove | RequeueMove | UnlockMove | RemoveMove
#: The item type of each move's arguments type (the client builds items from them).
MOVE_OF: dict[type[Args[StackChange]], type[Move]] = {
    LaunchArgs: LaunchMove,
    RequeueArgs: RequeueMove,
    UnlockArgs: UnlockMove,
    RemoveArgs: RemoveMove,
}


class MoveAnswer(Message, omit_defaults=True, frozen=True):
    """One item's answer: its change, or why it was refused (exactly one of the two)."""

    change: StackChange | None = None
    error: ErrorBody | None = None


class MovesResult(Message, frozen=True):
    #: One answer per item, in the items' order.
    results: list[MoveAnswer]


class MovesArgs(Args[MovesResult], frozen=True):
    """Many moves in one round trip: each is carried out (or refused) on its own, in order,
    as if sent alone; one refused never stops the others. The request as a whole is refused
    only when it does not decode (``bad_args`` naming ``items[i]`` and the field)."""

    VERB = Verb.MOVES
    RESULT = MovesResult
    items: Annotated[list[Move], Meta(max_length=MAX_MOVES)]


def move_answers(result: MovesResult, count: int) -> list[StackChange | ProtocolError]:
    """Each item's change, or its refusal as a ProtocolError; ``bad_answer`` when the answer
    does not hold exactly one well-formed answer per item."""
    if len(result.results) != count:
        raise ProtocolError(
            ErrorCode.BAD_ANSWER, f"moves answer: {len(result.results)} results for {count} items"
        )
    out: list[StackChange | ProtocolError] = []
    for i, answer in enumerate(result.results):
        if (answer.change is None) == (answer.error is None):
            raise ProtocolError(
                ErrorCode.BAD_ANSWER, f"moves answer: `results[{i}]`: give `change` or `error`"
            )
        if answer.error is not None:
            out.append(ProtocolError(answer.error.code, answer.error.message))
        else:
            assert answer.change is not None
            out.append(answer.change)
    return out


def move_batches(moves: list[Move], max_items: int = MAX_MOVES) -> list[list[int]]:
    """The indexes of ``moves`` split into requests of at most ``max_items`` items and
    MAX_REQUEST_BYTES bytes, order kept; each move must fit alone (MAX_MOVE_BYTES)."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, move in enumerate(moves):
        n = move_size(move)
        if n > MAX_MOVE_BYTES:
            raise ValueError(f"the {move.stack} move is over {MAX_MOVE_BYTES} bytes")
        if current and (len(current) >= max_items or size + n > MAX_MOVE_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        batches.append(current)
    return batches


def move_size(move: Move) -> int:
    """The bytes ``move`` takes in a ``moves`` request (with its separating comma)."""
    return len(_encoder.encode(move)) + 1


class UnlockQfinResult(Message, frozen=True):
    partition: str
    delete: list[str]
    holder: LockRecord | None


class UnlockQfinArgs(Args[UnlockQfinResult], frozen=True):
    VERB = Verb.UNLOCK_QFIN
    RESULT = UnlockQfinResult
    partition: str
    by: Operator
    dry_run: bool = False


#: Every verb's argument type: the agent decodes a request's args with it.
ARGS: dict[Verb, type[Args[Any]]] = {
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
        MovesArgs,
    )
}


# ------------------------------------------------------------------ envelope


class Hello(Message, frozen=True):
    hello: Literal["spica-agent"]
    protocol: int
    version: str
    root: str
    host: str
    pid: int
    boot_id: str | None


class ErrorBody(Message, frozen=True):
    code: str
    message: str


class Request(Message, frozen=True):
    id: int | str
    verb: str
    args: msgspec.Raw = msgspec.Raw(b"{}")


class Response(Message, omit_defaults=True, frozen=True):
    id: int | str | None
    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorBody | None = None


# ------------------------------------------------------------------ encoding and decoding

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)
_response_decoder = msgspec.json.Decoder(Response)
_hello_decoder = msgspec.json.Decoder(Hello)
_AT = re.compile(r"^(?P<what>.*?) - at `\$\.?(?P<where>[^`]*)`$", re.S)


def describe(exc: msgspec.DecodeError) -> str:
    """msgspec's error made readable: "`by`: expected `str`, got `int`"."""
    text = " ".join(str(exc).split())
    match = _AT.match(text)
    what, where = (match["what"], match["where"]) if match else (text, "")
    what = what[:1].lower() + what[1:]
    what = what.replace("object contains unknown field", "unknown field")
    what = what.replace("object missing required field", "missing field").replace(" | null`", "`")
    return f"`{where}`: {what}" if where else what


def encode(message: msgspec.Struct) -> bytes:
    """One JSON line; never contains a raw newline, whatever the strings hold."""
    return _encoder.encode(message) + b"\n"


def encode_request(request_id: int | str, args: Args[Any]) -> bytes:
    return encode(
        Request(id=request_id, verb=args.VERB.value, args=msgspec.Raw(_encoder.encode(args)))
    )


class _Answer(msgspec.Struct):
    """A successful :class:`Response` as the agent writes it: the result encoded in the same
    pass (a status of thousands of entries is not encoded twice)."""

    id: int | str | None
    ok: bool
    result: Any


def ok(request_id: int | str | None, result: msgspec.Struct) -> bytes:
    return encode(_Answer(id=request_id, ok=True, result=result))


def fail(request_id: int | str | None, code: ErrorCode | str, message: str) -> bytes:
    error = ErrorBody(code=str(code), message=message)
    return encode(Response(id=request_id, ok=False, error=error))


def decode_request(line: bytes) -> Request:
    """Parse one request line (not its args), or raise ProtocolError(bad_request / too_large)."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"request of {len(line)} bytes, at most {MAX_REQUEST_BYTES}"
        )
    try:
        return _request_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"bad request: {describe(exc)}") from None


_args_decoders: dict[str, msgspec.json.Decoder[Any]] = {}


def args_type(verb: str) -> type[Args[Any]]:
    """The argument type of ``verb``; ``unknown_verb`` naming the known ones."""
    cls = ARGS.get(verb)  # type: ignore[call-overload]
    if cls is None:
        known = ", ".join(sorted(ARGS))
        raise ProtocolError(ErrorCode.UNKNOWN_VERB, f"unknown verb {verb!r:.60} (known: {known})")
    return cls  # type: ignore[no-any-return]


def decode_args(verb: str, raw: bytes) -> Args[Any]:
    """A request's args as its verb's type; ``bad_args`` naming the field when they do not fit."""
    decoder = _args_decoders.get(verb)
    if decoder is None:
        decoder = _args_decoders[verb] = msgspec.json.Decoder(args_type(verb))
    try:
        return decoder.decode(raw)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"{verb}: {describe(exc)}") from None


class _Greeting(msgspec.Struct):
    """The two fields every protocol version's hello keeps, read before the strict decode."""

    hello: Any = None
    protocol: Any = None


def decode_hello(line: bytes) -> Hello:
    """The agent's first line, strictly; refuses another protocol version naming both."""
    try:
        greeting = msgspec.json.decode(line, type=_Greeting)
    except msgspec.DecodeError:
        greeting = _Greeting()
    if greeting.hello != HELLO:
        raise ProtocolError(ErrorCode.BAD_ANSWER, f"not a spica agent greeting: {line[:200]!r}")
    if greeting.protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_ANSWER,
            f"the node's agent speaks protocol {greeting.protocol!r:.20}, this SPICA speaks "
            f"{PROTOCOL_VERSION}: install the same SPICA version on the node",
        )
    try:
        return _hello_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_ANSWER, f"agent hello: {describe(exc)}") from None


def decode_response(line: bytes) -> Response:
    try:
        return _response_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_ANSWER, f"agent sent no response ({describe(exc)}): {line[:200]!r}"
        ) from None


_result_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def result_of(response: Response, args_type: type[Args[R]]) -> R:
    """The answer as the verb's result type, or the agent's error raised as ProtocolError; an
    answer that does not fit is ``bad_answer`` naming the verb and the field."""
    if not response.ok:
        error = response.error
        raise ProtocolError(
            error.code if error else ErrorCode.INTERNAL, error.message if error else ""
        )
    decoder = _result_decoders.get(args_type)
    if decoder is None:
        decoder = _result_decoders[args_type] = msgspec.json.Decoder(args_type.RESULT)
    try:
        return decoder.decode(response.result)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_ANSWER, f"{args_type.VERB} answer: {describe(exc)}"
        ) from None


# ------------------------------------------------------------------ fits_headers (ingestion)

#: Files answered by one ``fits_headers`` request, and their bytes together: the agent reads
#: each file whole (its checksum), so one request stays within a call timeout.
MAX_FITS_FILES = 100
MAX_FITS_BYTES = 256 * 1024 * 1024
MAX_FITS_PATHS = 1000


class FitsFile(Message, frozen=True):
    """One FITS file as the agent read it (``spica_core.ingest.fitsscan``): its primary and
    first extension headers as 80-column card text, or why it could not be read."""

    #: Relative to the spica root.
    path: str
    primary: str | None = None
    first_extension: str | None = None
    extensions: int | None = None
    size: int | None = None
    checksum: str | None = None
    error: str | None = None


class FitsProblem(Message, frozen=True):
    """A path the walk could not take (a loop, a broken link, outside the root)."""

    path: str
    reason: str


class FitsHeadersResult(Message, frozen=True):
    files: list[FitsFile]
    #: The walk's problems, in the answer to ``offset`` 0 only.
    problems: list[FitsProblem]
    #: Every FITS file the paths hold, and the ``offset`` of the next request (None: done).
    total: int
    next: int | None


class FitsHeadersArgs(Args[FitsHeadersResult], frozen=True):
    """Headers of the FITS files under ``paths`` (files or directories, walked recursively,
    relative to the root), from the ``offset``-th file of the walk's sorted order on."""

    VERB = Verb.FITS_HEADERS
    RESULT = FitsHeadersResult
    paths: Annotated[list[str], Meta(min_length=1, max_length=MAX_FITS_PATHS)]
    offset: NonNegative = 0

    def timeout(self, call_timeout: float) -> float:
        return call_timeout + UNSIZED_READ_S


ARGS[Verb.FITS_HEADERS] = FitsHeadersArgs
# ------------------------------------------------------------------ transfers
#
# Paths are relative to the node's spica root (``raid1/07AQ01/805282p.fits``); the agent
# confines each one to the root (symlinks included). A copy writes the partial file that
# ``prepare`` names (``.<name>.spica-part`` beside the destination, never taken for a complete
# file), and ``place`` renames it into place only when its size and checksum are the ones the
# source gave. Added within protocol 2: an older agent answers ``unknown_verb``.

#: Files in one ``checksum`` request.
MAX_CHECKSUM_PATHS = 256
RelPath = Annotated[str, Meta(min_length=1, max_length=1024)]
Checksum = Annotated[str, Meta(pattern=r"^[a-z0-9]{1,16}:[0-9a-f]{1,128}$")]


class FileSum(Message, frozen=True):
    """What a node holds at one path: size and checksum (``xxh128:<hex>``), or why not."""

    path: str
    exists: bool
    size: int | None = None
    checksum: str | None = None
    #: Why the file could not be read (not a regular file, permission denied, ...).
    error: str | None = None


class ChecksumResult(Message, frozen=True):
    files: list[FileSum]


class ChecksumArgs(Args[ChecksumResult], frozen=True):
    VERB = Verb.CHECKSUM
    RESULT = ChecksumResult
    paths: Annotated[list[RelPath], Meta(max_length=MAX_CHECKSUM_PATHS)]

    def timeout(self, call_timeout: float) -> float:
        return call_timeout + UNSIZED_READ_S if self.paths else call_timeout


class PrepareResult(Message, frozen=True):
    """Where to write: ``partial`` (relative) is ``real_partial`` on the node's disk, holding
    ``size`` bytes already (0 when it starts afresh) whose checksum is ``checksum``."""

    path: str
    partial: str
    real_partial: str
    size: int
    checksum: str | None
    #: The destination as it is now (a copy placed before its runner died is found here).
    destination: FileSum


class PrepareArgs(Args[PrepareResult], frozen=True):
    """Make the destination's directory (inside the root) and say where the copy writes.
    ``resume``: keep a partial file left by an interrupted copy (its size and checksum are
    answered); else it is deleted. ``size``: the destination is hashed only at that size."""

    VERB = Verb.PREPARE
    RESULT = PrepareResult
    path: RelPath
    resume: bool = True
    size: NonNegative | None = None

    def timeout(self, call_timeout: float) -> float:
        # A partial file and a destination already there may each be hashed.
        return _reading(call_timeout, 2 * (self.size or 0))


class PlaceResult(Message, frozen=True):
    """``placed``: the destination now holds the expected bytes (``already``: it did before
    this request, the partial was dropped). Otherwise the partial held ``size`` bytes of
    ``checksum`` and was deleted."""

    path: str
    placed: bool
    already: bool
    size: int
    checksum: str


class PlaceArgs(Args[PlaceResult], frozen=True):
    """Hash the partial of ``path``; when it is ``size`` bytes of ``checksum``, flush it and
    rename it into place (atomic: the destination is never seen incomplete), else delete it.
    A destination already there is kept only if it holds those bytes (else ``wrong_state``)."""

    VERB = Verb.PLACE
    RESULT = PlaceResult
    path: RelPath
    size: NonNegative
    checksum: Checksum

    def timeout(self, call_timeout: float) -> float:
        # Read whole for its checksum, then flushed to the disk before the rename.
        return _reading(call_timeout, 2 * self.size)


ARGS.update({cls.VERB: cls for cls in (ChecksumArgs, PrepareArgs, PlaceArgs)})

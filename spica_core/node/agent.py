"""The node agent, ``spica node serve``: answers the console over an SSH channel (DESIGN §5).

Synchronous on purpose: the client pipelines nothing it needs answered out of order (one
request, one response, in order), and a blocking loop has no state to get wrong. Whatever a
request holds, the agent answers it with exactly one JSON line and keeps serving; a traceback
never reaches stdout (that is the wire), only stderr.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO

import msgspec

from spica_core import __version__
from spica_core.errors import InvalidName
from spica_core.names import validate_name
from spica_core.node import protocol as proto
from spica_core.node.batch_layout import BatchLayout
from spica_core.node.disk import discover_partitions, partition_usage, tree_bytes
from spica_core.node.files import StatCache
from spica_core.node.heartbeat import read_heartbeat
from spica_core.node.host import boot_id, hostname, iso_utc
from spica_core.node.layout import NodeLayout, OutsideRoot, parse_log_file_name, root_problem
from spica_core.node.locks import list_qfin_locks
from spica_core.node.protocol import (
    BinaryVersion,
    ErrorCode,
    ErrorRecord,
    Hello,
    LaunchArgs,
    MoveAnswer,
    MovesArgs,
    MovesResult,
    PartitionArg,
    PingArgs,
    PingResult,
    ProtocolError,
    QueueEntry,
    RemoveArgs,
    RequeueArgs,
    StackChange,
    StageArgs,
    StageResult,
    StatusArgs,
    StatusResult,
    TailArgs,
    TailResult,
    UnlockArgs,
    UnlockQfinArgs,
    UnlockQfinResult,
    Verb,
    VersionsArgs,
    VersionsResult,
)
from spica_core.node.queue import scan_queue
from spica_core.node.records import read_attempt, read_record
from spica_core.states import StackState

if TYPE_CHECKING:
    from spica_core.apps.versions import VersionCache

#: A virtual partition's tree walk is reused this long: status comes every 2 s and a raid
#: partition may hold hundreds of thousands of files.
VIRTUAL_USAGE_TTL = 5.0
_READ_CHUNK = 1 << 16
_HASH_CHUNK = 1 << 20


class Agent:
    """One agent session over a spica root: dispatches requests, holds the session's caches."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.layout = NodeLayout(self.root)
        self._line_cache = StatCache()
        #: What each queue file (an entry per pending or failed stack) or the heartbeat holds.
        self._file_cache = StatCache(max_entries=16384)
        self._session = os.urandom(6).hex()
        self._queue_versions = 0
        self._queue_seen: tuple[str, list[QueueEntry]] | None = None
        self._hash_cache = StatCache(max_entries=512)
        self._version_cache: VersionCache | None = None
        self._virtual_used: dict[str, tuple[float, int]] = {}
        self._handlers: dict[str, Callable[..., msgspec.Struct]] = {
            Verb.PING: self.ping,
            Verb.STATUS: self.status,
            Verb.TAIL: self.tail,
            Verb.VERSIONS: self.versions,
            Verb.STAGE: self.stage,
            Verb.LAUNCH: self.launch,
            Verb.REQUEUE: self.requeue,
            Verb.UNLOCK: self.unlock,
            Verb.UNLOCK_QFIN: self.unlock_qfin,
            Verb.REMOVE: self.remove,
            Verb.MOVES: self.moves,
            Verb.FITS_HEADERS: self.fits_headers,
            # DataTransfer's landing: spica_core.node.transfer_files, imported on first use.
            Verb.CHECKSUM: lambda args: _transfer_files().checksum(self.layout, args),
            Verb.PREPARE: lambda args: _transfer_files().prepare(self.layout, args),
            Verb.PLACE: lambda args: _transfer_files().place(self.layout, args),
        }

    def hello(self) -> Hello:
        return Hello(
            hello=proto.HELLO,
            protocol=proto.PROTOCOL_VERSION,
            version=__version__,
            root=str(self.root),
            host=hostname(),
            pid=os.getpid(),
            boot_id=boot_id(),
        )

    def respond(self, line: bytes) -> bytes:
        """The response line (with its newline) to one request line; never raises."""
        request_id: int | str | None = None
        try:
            request = proto.decode_request(line)
            request_id = request.id
            return proto.ok(request_id, self.handle(request.verb, request.args))
        except Exception as exc:
            if request_id is None and isinstance(exc, ProtocolError):
                request_id = _salvage_id(line)
            return proto.fail(request_id, *_error_of(exc))

    def handle(self, verb: str, raw_args: bytes) -> msgspec.Struct:
        """Decode ``raw_args`` with the verb's type (``bad_args`` naming the field) and answer."""
        return self._answer(proto.decode_args(verb, raw_args))

    def _answer(
        self, args: proto.Args[Any], *, pause: bool = True, layout: NodeLayout | None = None
    ) -> msgspec.Struct:
        """The verb's answer; ``layout``: a move's, when a batch resolved it once."""
        handler = self._handlers[args.VERB]
        result = handler(args) if layout is None else handler(args, layout)
        if isinstance(result, StackChange):
            # The claim counter as it is now: the operator's side keeps it with its intent,
            # so reconcile can later tell whether the daemon claimed the stack since.
            attempt, unreadable = read_attempt(layout or self.layout, result.stack)
            attempt = attempt if attempt is not None or unreadable else 0
            result = msgspec.structs.replace(result, attempt=attempt)
            if pause and not getattr(args, "dry_run", False):
                _fault_pause()
        return result

    # ------------------------------------------------------------------- verbs

    # Operator actions: semantic checks here, the moves in spica_core.node.actions, imported
    # on first use: most sessions only poll, and every connection starts an agent.

    def stage(self, args: StageArgs) -> StageResult:
        stack = validate_name(args.stack, "stack")
        if args.unit is not None and args.unit.partition is not None:
            validate_name(args.unit.partition, "partition")
        return _actions().stage(  # type: ignore[no-any-return]
            self.layout, stack, _commands(args), args.inputs, unit=args.unit, dry_run=args.dry_run
        )

    def launch(self, args: LaunchArgs, layout: NodeLayout | None = None) -> StackChange:
        return _actions().launch(  # type: ignore[no-any-return]
            layout or self.layout, _stack(args.stack), args.priority, args.by, dry_run=args.dry_run
        )

    def requeue(self, args: RequeueArgs, layout: NodeLayout | None = None) -> StackChange:
        return _actions().requeue(  # type: ignore[no-any-return]
            layout or self.layout,
            _stack(args.stack),
            args.priority,
            args.by,
            args.from_start,
            dry_run=args.dry_run,
        )

    def unlock(self, args: UnlockArgs, layout: NodeLayout | None = None) -> StackChange:
        return _actions().unlock(  # type: ignore[no-any-return]
            layout or self.layout,
            _stack(args.stack),
            StackState(args.to),
            args.by,
            args.priority,
            dry_run=args.dry_run,
        )

    def unlock_qfin(self, args: UnlockQfinArgs) -> UnlockQfinResult:
        partition = validate_name(args.partition, "partition")
        return _actions().unlock_qfin(  # type: ignore[no-any-return]
            self.layout, partition, args.by, dry_run=args.dry_run
        )

    def remove(self, args: RemoveArgs, layout: NodeLayout | None = None) -> StackChange:
        return _actions().remove(  # type: ignore[no-any-return]
            layout or self.layout,
            _stack(args.stack),
            args.purge,
            args.by,
            args.stack_id,
            dry_run=args.dry_run,
        )

    def moves(self, args: MovesArgs) -> MovesResult:
        """Each move as if sent alone, in order: one refused (or failing) never stops the
        next; its error is its own answer. ``queue/`` and ``stacks/`` are resolved once for
        the whole batch (:class:`BatchLayout`)."""
        answers: list[MoveAnswer] = []
        layout: NodeLayout
        try:
            layout = BatchLayout(self.root)
        except OutsideRoot:  # queue/ or stacks/ leads out of the root: each move says so
            layout = self.layout
        for item in args.items:
            try:
                change = self._answer(item, pause=False, layout=layout)
            except Exception as exc:
                code, message = _error_of(exc)
                answers.append(MoveAnswer(error=proto.ErrorBody(code=str(code), message=message)))
            else:
                assert isinstance(change, StackChange)
                answers.append(MoveAnswer(change=change))
        if any(not item.dry_run for item in args.items):
            _fault_pause()
        return MovesResult(results=answers)

    def ping(self, args: PingArgs) -> PingResult:
        return PingResult(time=iso_utc())

    def status(self, args: StatusArgs) -> StatusResult:
        """Everything a console poll needs from this node, in one round trip."""
        partitions = _partitions(args.partitions)
        if partitions is None:
            partitions = [(name, None) for name in discover_partitions(self.root)]
        now = time.time()
        heartbeat = read_heartbeat(self.root, now, self._file_cache)
        queue = scan_queue(
            self.root,
            states=args.states,
            line_cache=self._line_cache,
            entry_cache=self._file_cache,
        )
        entries = queue.entries
        version = self._queue_version_of(entries)
        unchanged = args.queue_version == version
        return StatusResult(
            root=str(self.root),
            host=hostname(),
            boot_id=boot_id(),
            time=iso_utc(now),
            load=_load(),
            partitions=[
                partition_usage(self.root, name, capacity, used_of=self._virtual_used_of)
                for name, capacity in partitions
            ],
            # The listing, or null when the client already holds this version of it: a poll
            # of an idle node then carries a few hundred bytes, not every pending stack.
            queue=None if unchanged else entries,
            queue_version=version,
            queue_unchanged=unchanged,
            # Every queue file by state, whatever ``states`` selected for the entries above.
            counts=queue.counts,
            heartbeat=heartbeat,
            qfin_locks=list_qfin_locks(self.root),
        )

    def _queue_version_of(self, entries: list[QueueEntry]) -> str:
        """A name for this exact listing, new whenever it differs from the last one; unique
        to this agent session, so a version a client kept from another session never
        matches."""
        if self._queue_seen is None or self._queue_seen[1] != entries:
            self._queue_versions += 1
            self._queue_seen = (f"{self._session}.{self._queue_versions}", entries)
        return self._queue_seen[0]

    def tail(self, args: TailArgs) -> TailResult:
        """The end of one command line's log, read from the end: logs can be gigabytes."""
        stack = validate_name(args.stack)
        line, n_lines, n_bytes = args.line, args.lines, args.bytes
        if n_lines is not None and n_bytes is not None:
            raise ProtocolError(ErrorCode.BAD_ARGS, "give 'lines' or 'bytes', not both")
        if n_lines is None and n_bytes is None:
            n_lines = proto.DEFAULT_TAIL_LINES
        stack_dir = self.layout.stack_dir(stack)
        if not stack_dir.is_dir():
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no stack directory for {stack} on this node")
        logs_dir = self.layout.logs_dir(stack)
        if line is None:
            line = self._default_log_line(stack, logs_dir)
        path = self.layout.log_file(stack, line)
        try:
            text, size, truncated = read_tail(path, lines=n_lines, nbytes=n_bytes)
        except FileNotFoundError:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"no log for line {line} of stack {stack}"
            ) from None
        except ValueError as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"log of line {line}: {exc}") from None
        return TailResult(
            stack=stack,
            line=line,
            path=self.layout.relative(path),
            size=size,
            text=text.decode("utf-8", errors="replace"),
            truncated=truncated,
        )

    def versions(self, args: VersionsArgs) -> VersionsResult:
        """What each application binary really is on this node (path, size, sha256, and the
        version it reports when asked)."""
        from spica_core.apps.versions import binary_problem

        checked: list[tuple[str, str]] = []
        for app in args.applications:
            name, binary = validate_name(app.name, "application"), app.binary
            why = binary_problem(binary)
            if why is not None:
                raise ProtocolError(ErrorCode.BAD_ARGS, f"binary of {name} {why}")
            checked.append((name, binary))
        found = [self._version_of(name, binary) for name, binary in checked]
        if args.version:
            found = self._with_versions(found)
        return VersionsResult(binaries=found)

    # ------------------------------------------------------------------- helpers

    def fits_headers(self, args: proto.FitsHeadersArgs) -> proto.FitsHeadersResult:
        """Headers of FITS files under the root for ``spica ingest --node`` (the walk never
        leaves the root, links included; each file is read whole for its checksum)."""
        from spica_core.ingest.fitsscan import FitsFormatError, scan_file
        from spica_core.ingest.walk import walk_paths

        roots = [str(self.layout.resolve(p)) for p in args.paths]
        walked = walk_paths(roots, inside=os.path.realpath(self.root))
        files: list[proto.FitsFile] = []
        budget = proto.MAX_FITS_BYTES
        at = args.offset
        while at < len(walked.files) and len(files) < proto.MAX_FITS_FILES and budget > 0:
            path = walked.files[at]
            shown = self.layout.relative(Path(path))
            try:
                found = scan_file(path)
            except (FitsFormatError, OSError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                files.append(proto.FitsFile(path=shown, error=reason))
            else:
                budget -= found.size
                files.append(
                    proto.FitsFile(
                        path=shown,
                        primary=found.primary,
                        first_extension=found.first_extension,
                        extensions=found.extensions,
                        size=found.size,
                        checksum=found.checksum,
                    )
                )
            at += 1
        problems = [] if args.offset else walked.problems
        return proto.FitsHeadersResult(
            files=files,
            problems=[
                proto.FitsProblem(path=self.layout.relative(Path(p.path)), reason=p.reason)
                for p in problems
            ],
            total=len(walked.files),
            next=at if at < len(walked.files) else None,
        )

    def _default_log_line(self, stack: str, logs_dir: Path) -> int:
        """The failed line when the stack failed and its log exists, else the latest log."""
        try:
            error_file = self.layout.queue_file(stack, StackState.FAILED)
        except OutsideRoot:
            error_file = None  # a planted symlink: ignore it, fall back to the latest log
        if error_file is not None:
            record, _ = read_record(error_file, ErrorRecord)
            if record is not None and record.line is not None and record.line >= 1:
                failed_log = self.layout.log_file(stack, record.line)
                if failed_log.is_file():
                    return record.line
        numbers: list[int] = []
        try:
            with os.scandir(logs_dir) as scan:
                for dirent in scan:
                    number = parse_log_file_name(dirent.name)
                    if number is not None:
                        numbers.append(number)
        except FileNotFoundError:
            pass
        if not numbers:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"stack {stack} has no log yet")
        return max(numbers)

    def _virtual_used_of(self, path: Path) -> int:
        now = time.monotonic()
        hit = self._virtual_used.get(str(path))
        if hit is not None and now - hit[0] < VIRTUAL_USAGE_TTL:
            return hit[1]
        used = tree_bytes(path)
        self._virtual_used[str(path)] = (now, used)
        return used

    def _with_versions(self, binaries: list[BinaryVersion]) -> list[BinaryVersion]:
        """``binaries`` with the version each existing one reports: all run at once, each
        binary only once until it changes."""
        from spica_core.apps.versions import VersionCache

        if self._version_cache is None:
            self._version_cache = VersionCache()
        present = [i for i, b in enumerate(binaries) if b.exists and b.path is not None]
        versions = self._version_cache.versions([binaries[i].path or "" for i in present])
        out = list(binaries)
        for i, version in zip(present, versions, strict=True):
            out[i] = msgspec.structs.replace(out[i], version=version)
        return out

    def _version_of(self, name: str, binary: str) -> BinaryVersion:
        from spica_core.apps.versions import resolve_binary

        found = resolve_binary(binary)
        missing = BinaryVersion(
            name=name, binary=binary, path=None, exists=False, size=None, sha256=None
        )
        if found is None:
            return missing
        where = os.path.abspath(found)
        path = Path(os.path.realpath(found))  # what really runs, and a stable cache key
        try:
            st = os.stat(path)
        except OSError:
            return msgspec.structs.replace(missing, path=where)
        if not stat.S_ISREG(st.st_mode):
            return msgspec.structs.replace(missing, path=where)
        sha256 = None
        with contextlib.suppress(OSError, ValueError):  # unreadable: exists, no checksum
            sha256 = self._hash_cache.get(path, sha256_file)
        return BinaryVersion(
            name=name, binary=binary, path=where, exists=True, size=st.st_size, sha256=sha256
        )


# ----------------------------------------------------------------------- file reading


def read_tail(
    path: Path, *, lines: int | None = None, nbytes: int | None = None
) -> tuple[bytes, int, bool]:
    """``(data, file size, truncated)``: the last ``lines`` lines or ``nbytes`` bytes.

    Reads backwards from the end in chunks and never more than MAX_TAIL_BYTES, so a huge
    log costs no more than its tail. ``truncated`` says the file holds more before ``data``.
    Raises FileNotFoundError, or ValueError when the path is not a regular file (a FIFO
    would block the agent forever).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        size = st.st_size
        if nbytes is not None:
            start = max(0, size - min(nbytes, proto.MAX_TAIL_BYTES))
            f.seek(start)
            return f.read(size - start), size, start > 0
        wanted = lines if lines is not None else proto.DEFAULT_TAIL_LINES
        pos, buf = size, b""
        while pos > 0 and len(buf) < proto.MAX_TAIL_BYTES:
            step = min(_READ_CHUNK, pos, proto.MAX_TAIL_BYTES - len(buf))
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            # A final newline ends the last line; it does not start another one.
            if buf.count(b"\n") - buf.endswith(b"\n") >= wanted:
                break
        parts = buf.splitlines(keepends=True)
        kept = parts[-wanted:]
        return b"".join(kept), size, pos > 0 or len(kept) < len(parts)


def sha256_file(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    import hashlib  # here: most sessions never ask, and the agent's start stays light

    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------- arguments


def _partitions(value: list[PartitionArg] | None) -> list[tuple[str, int | None]] | None:
    """The partitions asked for, names checked, each once: a tree is never walked twice."""
    if value is None:
        return None
    out: dict[str, int | None] = {}
    for item in value:
        out.setdefault(validate_name(item.name, "partition"), item.capacity)
    return list(out.items())


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _error_of(exc: Exception) -> tuple[ErrorCode | str, str]:
    """The wire error (code, message) of a failure while answering; an unexpected one is
    ``internal`` in one line (its traceback to stderr, never to the wire)."""
    if isinstance(exc, ProtocolError):
        return exc.code, exc.message
    if isinstance(exc, InvalidName):
        return ErrorCode.BAD_NAME, str(exc)
    if isinstance(exc, OutsideRoot):
        return ErrorCode.OUTSIDE_ROOT, str(exc)
    import traceback  # here: only a failure needs it, and every connection starts an agent

    traceback.print_exc(file=sys.stderr)
    return ErrorCode.INTERNAL, " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


class _Id(msgspec.Struct):
    id: int | str | None = None


def _salvage_id(line: bytes) -> int | str | None:
    """The id of a request refused for its args, so the client can still match the answer."""
    if len(line) > proto.MAX_REQUEST_BYTES:
        return None
    try:
        return msgspec.json.decode(line, type=_Id).id
    except msgspec.DecodeError:
        return None


# ----------------------------------------------------------------------- the loop


def _read_request_line(stdin: BinaryIO) -> tuple[bytes, bool] | None:
    """``(line, too_large)``, or None at EOF; memory stays bounded whatever the client sends."""
    line = stdin.readline(proto.MAX_REQUEST_BYTES + 1)
    if not line:
        return None
    if line.endswith(b"\n") or len(line) <= proto.MAX_REQUEST_BYTES:
        return line.rstrip(b"\r\n"), False
    # Over the limit: drop the rest of this line without keeping it.
    while True:
        rest = stdin.readline(_READ_CHUNK)
        if not rest or rest.endswith(b"\n"):
            return b"", True


#: Test hook: with ``SPICA_FAULT_POINT=agent-slow-answer`` in the agent's environment (put
#: there by the node's ``agent_command``), a move is answered only after
#: ``SPICA_FAULT_SECONDS`` (default 10): the time to lose the connection after the commit.
FAULT_ENV = "SPICA_FAULT_POINT"


def _fault_pause() -> None:
    if os.environ.get(FAULT_ENV) == "agent-slow-answer":
        time.sleep(float(os.environ.get("SPICA_FAULT_SECONDS", "10")))


def _actions() -> ModuleType:
    from spica_core.node import actions

    return actions


def _transfer_files() -> ModuleType:
    from spica_core.node import transfer_files

    return transfer_files


def run(root: str) -> int:
    """``spica node serve --root ROOT`` on this process's stdin and stdout; the exit status."""
    # The same rule as the configuration's, for the root as given and where it really leads.
    why = root_problem(root) or root_problem(os.path.realpath(root))
    if why is not None:
        sys.stderr.write(f"spica: error: --root {root}: {why}\n")
        return 2
    path = Path(root)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        sys.stderr.write(f"spica: error: spica root {root} {what}\n")
        return 2
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # stdout is the wire: anything printed by accident would desynchronise the client.
    sys.stdout = sys.stderr
    return serve(path, stdin, stdout)


def main(argv: list[str]) -> int:
    """The arguments of ``spica node serve`` (after those two words), parsed without typer."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="spica node serve",
        description="Answer JSON-line requests on stdin with one JSON line each on stdout.",
    )
    parser.add_argument("--root", required=True, metavar="PATH", help="the node's spica root")
    args = parser.parse_args(argv)
    return run(args.root)


def serve(root: Path, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Greet, then answer each request line with one response line until EOF (returns 0)."""
    agent = Agent(root)
    try:
        stdout.write(proto.encode(agent.hello()))
        stdout.flush()
        while (read := _read_request_line(stdin)) is not None:
            line, too_large = read
            if too_large:
                response = proto.fail(
                    None,
                    ErrorCode.TOO_LARGE,
                    f"request line over {proto.MAX_REQUEST_BYTES} bytes, not read",
                )
            else:
                response = agent.respond(line)
            stdout.write(response)
            stdout.flush()
    except BrokenPipeError:
        pass  # the client went away: nothing left to answer
    return 0


# ------------------------------------------------------------------- action arguments


def _stack(stack: str) -> str:
    return validate_name(stack, "stack")


def _commands(args: StageArgs) -> bytes:
    """The ``stage`` commands: ``commands_b64`` (exact bytes, a size the request limit can
    hold whatever the text) or ``commands`` (text, as older clients send it)."""
    if args.commands_b64 is None:
        if args.commands is None:
            raise ProtocolError(ErrorCode.BAD_ARGS, "stage: give `commands_b64` or `commands`")
        return args.commands.encode("utf-8", "surrogatepass")
    import base64
    import binascii

    try:
        return base64.b64decode(args.commands_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(ErrorCode.BAD_ARGS, "stage: `commands_b64` must be base64") from None

"""The on-node layout of a spica root (DESIGN §3), shared by the node agent and the daemon.

Everything a node process touches lives under its spica root::

    queue/<stack>.<suffix>          the stack's state (spica_core.states.SUFFIX)
    stacks/<stack>/commands.sh      one shell command per line
    stacks/<stack>/progress         the last line that succeeded (resume point)
    stacks/<stack>/attempt          the daemon's claim counter of the stack
    stacks/<stack>/logs/NNN.log     output of command line NNN (1-based, at least 3 digits)
    locks/<partition>.qfin.lock     the QFin lock of a raid partition
    removed/<stack>.json            who removed the stack and when (until it is staged again)
    daemon.heartbeat                rewritten by the daemon to prove it alive
    raid*/                          data partitions

Names reach this module from the network, so every path is built through
:func:`resolve_inside`, which refuses anything (``..``, absolute parts, symlinks) that would
lead out of the root. Queue records are small JSON documents written by other processes,
possibly half-written or hand-edited: the readers report them as malformed, never crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import cache, cached_property, lru_cache, partial
from pathlib import Path
from types import NoneType
from typing import Any, TypeVar, get_args, get_type_hints

from spica_core.errors import InvalidName, UsageError
from spica_core.names import is_valid_name, validate_name
from spica_core.states import SUFFIX, StackState, parse_queue_file_name

QUEUE_DIR = "queue"
STACKS_DIR = "stacks"
LOCKS_DIR = "locks"
REMOVED_DIR = "removed"
#: ``queue/.<stack>.<suffix>.<pid>.moving``: a queue file an operator action is moving (its
#: record is rewritten there between the exclusive rename and the final one).
MOVING_SUFFIX = ".moving"
LOGS_DIR = "logs"
COMMANDS_FILE = "commands.sh"
PROGRESS_FILE = "progress"
ATTEMPT_FILE = "attempt"
HEARTBEAT_FILE = "daemon.heartbeat"
QFIN_LOCK_SUFFIX = ".qfin.lock"
#: Directories directly under the root whose name starts with this are data partitions.
PARTITION_PREFIX = "raid"
#: The one size limit of a stack's ``commands.sh``, wherever it comes from (``stack add``
#: here or over SSH, the agent's ``stage``) and when the daemon reads it: SPICA's generated
#: stacks are a few hundred lines, so 1 MiB leaves room while bounding every reader.
MAX_COMMANDS_BYTES = 1024 * 1024
#: Queue records, locks and heartbeats are a few hundred bytes; a bigger file is refused
#: (reported as malformed) rather than read, so a runaway writer cannot slow every status.
MAX_RECORD_BYTES = 256 * 1024
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


#: A spica root in (or at) these trees would put the system under the agent's confinement and
#: the operator's ``remove``: refused, as is every root directly at one of ``_SYSTEM_DIRS``.
_SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
    "/proc", "/run", "/sbin", "/sys", "/usr",
)  # fmt: skip
_SYSTEM_DIRS = ("/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var")


def root_problem(root: str) -> str | None:
    """Why ``root`` cannot be a node's spica root, or None.

    Everything the agent and the daemon touch is confined to the root, so the root itself
    must be a plain, absolute, normalized path (a trailing ``/`` aside) that is neither ``/``
    nor a system directory. Both the configuration and ``spica node serve --root`` ask here.
    """
    if not root:
        return "empty: expected an absolute directory such as /data/spica"
    if not root.isprintable():
        return "holds a control character"
    if not root.startswith("/"):
        return f"{root!r} is not absolute: expected an absolute directory such as /data/spica"
    trimmed = root.rstrip("/") or "/"
    normal = os.path.normpath(trimmed)
    if normal != trimmed or trimmed.startswith("//"):
        return f"{root!r} is not normalized (no '..', '.' or '//' components)"
    if trimmed == "/":
        return "'/' is the whole filesystem: expected a directory of its own such as /data/spica"
    if trimmed in _SYSTEM_DIRS or any(
        trimmed == tree or trimmed.startswith(tree + "/") for tree in _SYSTEM_TREES
    ):
        return (
            f"{trimmed} is a system directory: expected a directory of its own such as /data/spica"
        )
    return None


class OutsideRoot(UsageError):
    """A path that would leave the spica root (``..``, absolute, or through a symlink)."""

    def __init__(self, root: str, path: str, reason: str) -> None:
        self.root = root
        self.path = path
        self.reason = reason
        super().__init__(f"path {path!r} is outside the spica root {root}: {reason}")


# --------------------------------------------------------------------------- paths


def resolve_inside(root: Path | str, *parts: str) -> Path:
    """The real path of ``root/parts…``, or :class:`OutsideRoot` when it is not under root.

    Parts may hold ``/`` separators; each component is checked before touching the disk, then
    the joined path's realpath (symlinks resolved; missing tails allowed) must stay under the
    root's realpath. Callers open the returned real path, so a symlink checked here is not
    followed again later.
    """
    root_real = _real_root(os.fspath(root))
    shown = "/".join(str(p) for p in parts)
    components: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise OutsideRoot(str(root_real), repr(part), "not a string")
        if "\x00" in part:
            raise OutsideRoot(str(root_real), shown, "contains a NUL byte")
        if os.path.isabs(part):
            raise OutsideRoot(str(root_real), shown, "absolute path")
        for comp in part.split("/"):
            if comp == "..":
                raise OutsideRoot(str(root_real), shown, "'..' component")
            if comp not in ("", "."):
                components.append(comp)
    base = str(root_real)
    real = _realpath_under(base, components)
    if real != base and not real.startswith(base.rstrip("/") + "/"):
        raise OutsideRoot(base, shown, f"resolves to {real}")
    return Path(real)


def _realpath_under(base: str, components: list[str]) -> str:
    """``os.path.realpath(base/components…)`` for a real ``base`` and components without
    ``..``: one lstat per component below ``base`` instead of one per component from ``/``
    (every status resolves a dozen paths), and the full resolution as soon as a symlink or
    anything unusual is met."""
    path = base
    for i, comp in enumerate(components):
        path = os.path.join(path, comp)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            # Nothing to resolve below a missing component (no ``..`` among the rest).
            return os.path.join(path, *components[i + 1 :])
        except OSError:
            break
        if stat.S_ISLNK(mode):
            break
    else:
        return path
    return os.path.realpath(os.path.join(base, *components))


@lru_cache(maxsize=64)
def _real_root(root: str) -> Path:
    """The root's realpath, once per process: a node's root does not move while its agent or
    daemon runs, and every status resolves a dozen paths under it. Were it re-pointed, the
    stale answer only refuses paths under the new target: it never lets one out."""
    return Path(os.path.realpath(root))


def log_file_name(line: int) -> str:
    """``NNN.log``: zero-padded to 3 digits so listings sort, wider past line 999."""
    if line < 1:
        raise ValueError(f"command lines are numbered from 1, got {line}")
    return f"{line:03d}.log"


def parse_log_file_name(name: str) -> int | None:
    """The line number of a ``NNN.log`` file name, None for anything else."""
    stem, dot, ext = name.partition(".")
    if dot and ext == "log" and stem.isascii() and stem.isdigit() and int(stem) >= 1:
        return int(stem)
    return None


@dataclass(frozen=True)
class NodeLayout:
    """Where things are under one spica root; every method validates names and confines."""

    root: Path

    def resolve(self, *parts: str) -> Path:
        return resolve_inside(self.root, *parts)

    def queue_dir(self) -> Path:
        return self.resolve(QUEUE_DIR)

    def queue_file(self, stack: str, state: StackState) -> Path:
        return self.resolve(QUEUE_DIR, f"{validate_name(stack)}.{SUFFIX[state]}")

    def stack_dir(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack))

    def commands_file(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), COMMANDS_FILE)

    def progress_file(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), PROGRESS_FILE)

    def attempt_file(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), ATTEMPT_FILE)

    def logs_dir(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), LOGS_DIR)

    def log_file(self, stack: str, line: int) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), LOGS_DIR, log_file_name(line))

    def locks_dir(self) -> Path:
        return self.resolve(LOCKS_DIR)

    def qfin_lock(self, partition: str) -> Path:
        return self.resolve(LOCKS_DIR, validate_name(partition, "partition") + QFIN_LOCK_SUFFIX)

    def removed_file(self, stack: str) -> Path:
        return self.resolve(REMOVED_DIR, f"{validate_name(stack)}.json")

    def heartbeat_file(self) -> Path:
        return self.resolve(HEARTBEAT_FILE)

    def partition_dir(self, partition: str) -> Path:
        return self.resolve(validate_name(partition, "partition"))

    def relative(self, path: Path) -> str:
        """``path`` relative to the root's realpath, for messages and the wire."""
        return str(path.relative_to(os.path.realpath(self.root)))


# --------------------------------------------------------------------------- host identity


def iso_utc(timestamp: float | None = None) -> str:
    """ISO 8601 UTC with a ``Z``, to the millisecond: the one time format on the wire."""
    moment = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hostname() -> str:
    return socket.gethostname()


@lru_cache(maxsize=1)
def boot_id() -> str:
    """This boot's id: a pid recorded before a reboot must never be taken for a live one."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def pid_alive(pid: Any, host: Any, boot: Any) -> bool:
    """Whether ``pid`` recorded on ``host`` during boot ``boot`` still runs.

    A pid from another host or another boot may have been reused, so it counts as dead;
    EPERM means the process exists under another user.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if host != hostname() or boot != boot_id():
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (ProcessLookupError, OSError, OverflowError):
        return False
    return True


# --------------------------------------------------------------------------- records

R = TypeVar("R", bound="_Record")
P = TypeVar("P", str, Path)


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def shallow_dict(obj: Any) -> dict[str, Any]:
    """A dataclass of JSON scalars as a dict: a shallow copy, not ``asdict``'s recursive deep
    copy (a status poll puts a record of every pending and failed stack on the wire)."""
    return {name: getattr(obj, name) for name in _field_names(type(obj))}


@cache
def _field_types(cls: type) -> dict[str, tuple[tuple[type, ...], bool]]:
    """Field name -> (accepted JSON types, may be null), from the dataclass annotations."""
    hints = get_type_hints(cls)
    out: dict[str, tuple[tuple[type, ...], bool]] = {}
    for f in fields(cls):
        args = get_args(hints[f.name]) or (hints[f.name],)
        out[f.name] = (tuple(a for a in args if a is not NoneType), NoneType in args)
    return out


class _Record:
    """A JSON queue record: typed fields, tolerant parsing, atomic writing."""

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        """Build from parsed JSON, or raise ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        values: dict[str, Any] = {}
        for name, (accepted, optional) in _field_types(cls).items():
            value = data.get(name)
            if value is None:
                if not optional:
                    raise ValueError(f"missing {name!r}")
            elif isinstance(value, bool) or not isinstance(value, accepted):
                raise ValueError(f"{name!r} has the wrong type ({type(value).__name__})")
            values[name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


@dataclass(frozen=True)
class LaunchRecord(_Record):
    """Content of ``<stack>.spica``; legacy launchers leave the file empty."""

    stack: str
    priority: int
    launched_at: str
    by: str


@dataclass(frozen=True)
class ClaimRecord(_Record):
    """Content of ``<stack>.processing``: who runs it, so a stale claim can be told apart."""

    pid: int
    host: str
    boot_id: str
    started_at: str
    daemon_pid: int | None = None
    #: The daemon's claim counter of this stack: ``stack_run.attempt`` of the lines it runs.
    attempt: int | None = None
    #: The launch it claimed (priority, time, by whom), so releasing or recovering the claim
    #: can put the same ``.spica`` back.
    priority: int | None = None
    launched_at: str | None = None
    launched_by: str | None = None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.host, self.boot_id)

    def daemon_alive(self) -> bool | None:
        if self.daemon_pid is None:
            return None
        return pid_alive(self.daemon_pid, self.host, self.boot_id)


@dataclass(frozen=True)
class ErrorRecord(_Record):
    """Content of ``<stack>.error``: where a requeue resumes and what the operator sees."""

    line: int | None
    exit_code: int | None
    message: str
    log_tail: str | None = None


@dataclass(frozen=True)
class LockRecord(_Record):
    """Content of ``locks/<partition>.qfin.lock``; legacy locks are empty files."""

    pid: int
    host: str
    boot_id: str
    acquired_at: str | None = None
    stack: str | None = None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.host, self.boot_id)


@dataclass(frozen=True)
class RemovedRecord(_Record):
    """Content of ``removed/<stack>.json``: who removed the stack, so a second operator
    removing it at the same time is told rather than told nothing happened."""

    stack: str
    by: str
    removed_at: str
    #: The node state it was removed from, and its dbspica id when the remover knew it.
    state: str
    stack_id: int | None = None


@dataclass(frozen=True)
class HeartbeatRecord(_Record):
    """Content of ``daemon.heartbeat``; its freshness is the file's mtime, not ``time``."""

    pid: int
    host: str
    time: str


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, for messages ("a FIFO", "a directory"…)."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def read_small(path: str | Path, limit: int = MAX_RECORD_BYTES) -> bytes:
    """The whole of a small regular file, without following a final symlink or blocking.

    Raises OSError (FileNotFoundError when absent) or ValueError when it is not a regular
    file or is over ``limit`` bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"over {limit} bytes")
    return data


def read_record(
    path: str | Path, kind: type[R], *, empty_ok: bool = False
) -> tuple[R | None, str | None]:
    """``(record, None)``, ``(None, None)`` for an allowed empty file, or ``(None, why)``.

    Never raises for bad content; a missing file is ``(None, "missing")`` since callers only
    read files they have just listed (the daemon may have renamed it meanwhile).
    """
    try:
        data = read_small(path)
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, _one_line(exc)
    if not data.strip():
        return None, (None if empty_ok else "empty file")
    try:
        return kind.from_dict(json.loads(data)), None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "not JSON"
    except ValueError as exc:
        return None, str(exc)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` by a complete JSON document: readers see the old or the new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_record(path: Path, record: _Record) -> None:
    write_json_atomic(path, record.to_dict())


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return " ".join(text.split())[:300]


def read_progress(path: Path) -> tuple[int | None, str | None]:
    """The last line that succeeded: ``(n, None)``, ``(None, None)`` if absent, or a reason."""
    try:
        data = read_small(path, 4096)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"progress: {_one_line(exc)}"
    text = data.decode("ascii", errors="replace").strip()
    if not text:
        return 0, None
    if not text.isdigit():
        return None, "progress: not an integer"
    return int(text), None


def read_attempt(layout: NodeLayout, stack: str) -> tuple[int | None, str | None]:
    """The stack's claim counter: ``(n, None)``, ``(None, None)`` before any claim, or
    ``(None, why)`` when the file is unreadable."""
    try:
        path = layout.attempt_file(stack)
    except OutsideRoot as exc:
        return None, f"attempt: {exc.reason}"
    value, why = read_progress(path)  # the same format: one non-negative integer
    return value, why and why.replace("progress", "attempt")


def count_lines(path: Path) -> int:
    """Physical lines of a file (a last line without newline counts), read in chunks.

    Line numbers in logs and ``progress`` are these physical line numbers.
    """
    count = 0
    last = b"\n"
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        while chunk := f.read(1 << 16):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


class StatCache:
    """Memoise a per-file computation until the file's (inode, size, mtime) changes.

    Status is polled every few seconds, so counting ``commands.sh`` lines or hashing a binary
    again each time would be waste; a rewritten file changes its stat signature.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[str, tuple[tuple[int, int, int, int], Any]] = {}
        self._max = max_entries

    def get(self, path: P, compute: Callable[[P], Any], st: os.stat_result | None = None) -> Any:
        """``compute(path)``, or its memo; ``st`` is the caller's fresh lstat of ``path``."""
        if st is None:
            st = os.stat(path, follow_symlinks=False)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._entries.get(str(path))
        if hit is not None and hit[0] == key:
            return hit[1]
        value = compute(path)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[str(path)] = (key, value)
        return value


# --------------------------------------------------------------------------- listings


@dataclass(frozen=True)
class QueueEntry:
    """One queue file as found on disk; ``malformed`` says what could not be read."""

    stack: str
    state: StackState
    mtime: float
    launch: LaunchRecord | None = None
    claim: ClaimRecord | None = None
    alive: bool | None = None
    daemon_alive: bool | None = None
    error: ErrorRecord | None = None
    malformed: str | None = None
    progress: int | None = None
    lines: int | None = None
    #: The daemon's claim counter (``stacks/<stack>/attempt``; None before the first claim):
    #: it only grows, so reconcile can tell whether the stack was claimed since an action.
    attempt: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The entry on the wire; computed once per entry (callers must not change it)."""
        return self._wire

    @cached_property
    def _wire(self) -> dict[str, Any]:
        claim = None
        if self.claim is not None:
            claim = {**self.claim.to_dict(), "alive": self.alive, "daemon_alive": self.daemon_alive}
        return {
            "stack": self.stack,
            "state": self.state.value,
            "mtime": iso_utc(self.mtime),
            "launch": self.launch.to_dict() if self.launch else None,
            "claim": claim,
            "error": self.error.to_dict() if self.error else None,
            "malformed": self.malformed,
            "progress": self.progress,
            "lines": self.lines,
            "attempt": self.attempt,
        }


@dataclass(frozen=True)
class QueueScan:
    """One pass over ``queue/``: the entries of the states asked for, and every file counted."""

    entries: list[QueueEntry]
    counts: dict[str, int]


def scan_queue(
    root: Path,
    *,
    states: Iterable[StackState] | None = None,
    line_cache: StatCache | None = None,
    entry_cache: StatCache | None = None,
) -> QueueScan:
    """Every queue file of ``states`` (default all), sorted by stack then state, and the
    count of queue files per state whatever ``states`` selected.

    Counting reads names alone (no stat, no read): completed stacks pile up by thousands.
    Files whose name is not ``<valid stack>.<suffix>`` are ignored; a queue file that is not a
    regular file is listed as malformed and never opened. ``entry_cache`` keeps each entry
    that comes from its file alone (every state but running) until the file's stat signature
    changes (records are replaced by rename: a new content is a new inode), so a status poll
    reads only what changed; a running entry's liveness and progress are read every time.
    """
    layout = NodeLayout(root)
    wanted = set(states) if states is not None else set(StackState)
    counts = {state.value: 0 for state in SUFFIX}
    try:
        scan = os.scandir(layout.queue_dir())
    except FileNotFoundError:
        return QueueScan([], counts)
    entries: list[QueueEntry] = []
    with scan:
        for dirent in scan:
            parsed = parse_queue_file_name(dirent.name)
            if parsed is None:
                move = read_interrupted_move(Path(dirent.path)) if dirent.name[0] == "." else None
                if move is not None:  # the stack is not absent: it is half-way moved
                    counts[move.target.value] += 1
                    if move.target in wanted:
                        entries.append(
                            QueueEntry(
                                move.stack, move.target, move.ctime, malformed=move.describe()
                            )
                        )
                continue
            stack, state = parsed
            if not is_valid_name(stack):
                continue
            counts[state.value] += 1
            if state not in wanted:
                continue
            try:
                st = dirent.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                entries.append(
                    QueueEntry(stack, state, st.st_mtime, malformed="not a regular file")
                )
                continue
            read = partial(
                _read_entry, layout, stack=stack, state=state, st=st, line_cache=line_cache
            )
            if state is StackState.RUNNING or entry_cache is None:
                entries.append(read(dirent.path))
            else:
                entries.append(entry_cache.get(dirent.path, read, st))
    order = {state: i for i, state in enumerate(StackState)}
    entries.sort(key=lambda e: (e.stack, order[e.state]))
    return QueueScan(entries, counts)


def list_queue(
    root: Path,
    *,
    states: Iterable[StackState] | None = None,
    line_cache: StatCache | None = None,
) -> list[QueueEntry]:
    """The queue entries of ``states`` (see :func:`scan_queue`)."""
    return scan_queue(root, states=states, line_cache=line_cache).entries


#: The record each queue state holds, and whether an empty file is allowed (legacy launchers).
_STATE_RECORDS: dict[StackState, tuple[type[_Record], bool]] = {
    StackState.PENDING: (LaunchRecord, True),
    StackState.RUNNING: (ClaimRecord, False),
    StackState.FAILED: (ErrorRecord, False),
}


@dataclass(frozen=True)
class InterruptedMove:
    """A ``.moving`` queue file: an operator action renamed the stack's queue file there and
    has not (yet) renamed it to its new state. ``target`` is the state its content is a
    record of: the new state once the new record is written, else still ``source``."""

    path: Path
    stack: str
    source: StackState
    target: StackState
    pid: int
    ctime: float

    @property
    def name(self) -> str:
        return self.path.name

    def mover_alive(self) -> bool:
        """Whether the process moving it still runs (the move takes milliseconds)."""
        return pid_alive(self.pid, hostname(), boot_id())

    def describe(self) -> str:
        if self.mover_alive():
            return f"being moved by pid {self.pid} (queue/{self.name})"
        return (
            f"interrupted move: queue/{self.name} (pid {self.pid}, dead) holds the "
            f"{self.target} record; the daemon finishes it as {self.target}"
        )


def move_with_record(
    src: Path, dst: Path, record: _Record, *, won: Callable[[], None] | None = None
) -> bool:
    """Rename ``src`` to ``dst`` with ``record`` as its content, never visible half-done;
    False when ``src`` was gone (another actor's rename won).

    The source is first renamed to a hidden ``.moving`` name (the exclusive commit), the
    record is written there, and only then does the file appear under its new state,
    complete, for a daemon or agent reading the queue. ``won`` runs once the commit is won and
    before the new state is visible; if it fails the source is put back. A process dying
    between the two renames leaves the hidden file, which the daemon finishes or undoes
    (spica_core.daemon.claims.recover_moves).
    """
    hidden = src.with_name(f".{src.name}.{os.getpid()}{MOVING_SUFFIX}")
    try:
        os.rename(src, hidden)
    except FileNotFoundError:
        return False
    if won is not None:
        try:
            won()
        except BaseException:
            os.rename(hidden, src)
            raise
    write_record(hidden, record)
    os.rename(hidden, dst)
    return True


def parse_moving_name(name: str) -> tuple[str, StackState, int] | None:
    """``(stack, source state, pid)`` of ``.<stack>.<suffix>.<pid>.moving``, else None."""
    if not name.startswith(".") or not name.endswith(MOVING_SUFFIX):
        return None
    source, dot, pid = name[1 : -len(MOVING_SUFFIX)].rpartition(".")
    parsed = parse_queue_file_name(source) if dot else None
    if parsed is None or not pid.isascii() or not pid.isdigit() or not is_valid_name(parsed[0]):
        return None
    return parsed[0], parsed[1], int(pid)


def read_interrupted_move(path: Path) -> InterruptedMove | None:
    """What a ``.moving`` file is and where its content says it was going; None when the
    name is not one or the file is gone or not a regular file."""
    parsed = parse_moving_name(path.name)
    if parsed is None:
        return None
    stack, source, pid = parsed
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    target = source
    for state, (kind, _) in _STATE_RECORDS.items():
        if read_record(path, kind)[0] is not None:
            target = state
            break
    return InterruptedMove(path, stack, source, target, pid, st.st_ctime)


def find_interrupted_moves(layout: NodeLayout, stack: str | None = None) -> list[InterruptedMove]:
    """The ``.moving`` files of ``queue/`` (of one stack, or all), by name."""
    prefix = f".{validate_name(stack)}." if stack is not None else "."
    try:
        names = sorted(n for n in os.listdir(layout.queue_dir()) if n.startswith(prefix))
    except FileNotFoundError:
        return []
    moves = [read_interrupted_move(layout.queue_dir() / n) for n in names]
    return [m for m in moves if m is not None and (stack is None or m.stack == stack)]


def _read_entry(
    layout: NodeLayout,
    path: str,
    *,
    stack: str,
    state: StackState,
    st: os.stat_result,
    line_cache: StatCache | None,
) -> QueueEntry:
    notes: list[str] = []
    record: _Record | None = None
    alive = daemon_alive = None
    progress = lines = None
    if state in _STATE_RECORDS:
        kind, empty_ok = _STATE_RECORDS[state]
        record, why = read_record(path, kind, empty_ok=empty_ok)
        if why:
            notes.append(why)
    if state is StackState.COMPLETED:
        # The claim that ran it stays in the ``.processed``; legacy ones hold nothing.
        record, _ = read_record(path, ClaimRecord, empty_ok=True)
    claim = record if isinstance(record, ClaimRecord) else None
    if state is StackState.RUNNING:
        alive = claim.alive() if claim else False
        daemon_alive = claim.daemon_alive() if claim else None
        progress, lines, why = _progress_of(layout, stack, line_cache)
        if why:
            notes.append(why)
    return QueueEntry(
        stack,
        state,
        st.st_mtime,
        launch=record if isinstance(record, LaunchRecord) else None,
        claim=claim,
        alive=alive,
        daemon_alive=daemon_alive,
        error=record if isinstance(record, ErrorRecord) else None,
        malformed="; ".join(notes) or None,
        progress=progress,
        lines=lines,
        attempt=read_attempt(layout, stack)[0],
    )


def _progress_of(
    layout: NodeLayout, stack: str, line_cache: StatCache | None
) -> tuple[int | None, int | None, str | None]:
    try:
        progress_path = layout.progress_file(stack)
        commands_path = layout.commands_file(stack)
    except OutsideRoot as exc:
        return None, None, f"stack directory: {exc.reason}"
    progress, why = read_progress(progress_path)
    lines: int | None = None
    try:
        lines = (
            line_cache.get(commands_path, count_lines) if line_cache else count_lines(commands_path)
        )
    except FileNotFoundError:
        why = "; ".join(filter(None, [why, "commands.sh missing"]))
    except (OSError, ValueError) as exc:
        why = "; ".join(filter(None, [why, f"commands.sh: {_one_line(exc)}"]))
    return progress, lines, why


@dataclass(frozen=True)
class QfinLock:
    partition: str
    holder: LockRecord | None
    alive: bool
    malformed: str | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "holder": self.holder.to_dict() if self.holder else None,
            "alive": self.alive,
            "malformed": self.malformed,
        }


def list_qfin_locks(root: Path) -> list[QfinLock]:
    """Every QFin lock file; an empty (legacy) lock has no holder and counts as not alive."""
    layout = NodeLayout(root)
    try:
        scan = os.scandir(layout.locks_dir())
    except FileNotFoundError:
        return []
    locks: list[QfinLock] = []
    with scan:
        for dirent in scan:
            if not dirent.name.endswith(QFIN_LOCK_SUFFIX):
                continue
            partition = dirent.name[: -len(QFIN_LOCK_SUFFIX)]
            try:
                validate_name(partition, "partition")
            except InvalidName:
                continue
            holder, why = read_record(Path(dirent.path), LockRecord, empty_ok=True)
            if holder is None and why is None:
                why = "empty lock file (no holder recorded)"
            alive = holder.alive() if holder else False
            locks.append(QfinLock(partition, holder, alive, why))
    locks.sort(key=lambda lock: lock.partition)
    return locks


@dataclass(frozen=True)
class Heartbeat:
    pid: int | None
    host: str | None
    time: str | None
    age_seconds: float
    malformed: str | None

    def to_wire(self) -> dict[str, Any]:
        return shallow_dict(self)


def read_heartbeat(
    root: Path, now: float | None = None, cache: StatCache | None = None
) -> Heartbeat | None:
    """The daemon heartbeat, None when there is none; a garbled one still has an age.

    ``cache`` keeps the parsed record while the file's stat signature is unchanged."""
    try:
        path = NodeLayout(root).heartbeat_file()
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    age = round((now if now is not None else datetime.now(UTC).timestamp()) - st.st_mtime, 3)

    def read(p: Path) -> tuple[HeartbeatRecord | None, str | None]:
        return read_record(p, HeartbeatRecord)

    record, why = cache.get(path, read, st) if cache else read(path)
    if record is None:
        return Heartbeat(None, None, None, age, why)
    return Heartbeat(record.pid, record.host, record.time, age, None)


def write_heartbeat(root: Path, pid: int | None = None) -> None:
    """Refresh the heartbeat (the daemon calls this on a timer)."""
    record = HeartbeatRecord(pid if pid is not None else os.getpid(), hostname(), iso_utc())
    write_record(NodeLayout(root).heartbeat_file(), record)


# --------------------------------------------------------------------------- partitions


@dataclass(frozen=True)
class PartitionUsage:
    """Disk figures of a partition; the byte counts are None when it cannot be measured."""

    name: str
    total_bytes: int | None
    free_bytes: int | None
    used_bytes: int | None
    virtual: bool
    exists: bool
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return shallow_dict(self)


def discover_partitions(root: Path) -> list[str]:
    """Names of the entries directly under root that look like data partitions (``raid*``)."""
    names: list[str] = []
    try:
        scan = os.scandir(root)
    except OSError:
        return names
    with scan:
        for dirent in scan:
            if not dirent.name.startswith(PARTITION_PREFIX):
                continue
            try:
                validate_name(dirent.name, "partition")
                if not dirent.is_dir(follow_symlinks=True):
                    continue
            except (InvalidName, OSError):
                continue
            names.append(dirent.name)
    return sorted(names)


def tree_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``; symlinks are neither followed nor counted."""
    total = 0
    pending = [os.fspath(path)]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except OSError:
            continue
        with scan:
            for dirent in scan:
                try:
                    if dirent.is_dir(follow_symlinks=False):
                        pending.append(dirent.path)
                    elif dirent.is_file(follow_symlinks=False):
                        total += dirent.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return total


def partition_usage(
    root: Path,
    name: str,
    capacity: int | None = None,
    *,
    used_of: Callable[[Path], int] = tree_bytes,
) -> PartitionUsage:
    """Disk usage of partition ``name``; raises InvalidName for a bad name.

    With a ``capacity`` the partition is virtual (the demo's disks share one real filesystem):
    total = capacity, used = bytes of the files under it. Otherwise the filesystem's own
    figures (statvfs; free is what an unprivileged writer may use). ``used_of`` lets a caller
    put a cache in front of the tree walk.
    """
    validate_name(name, "partition")
    virtual = capacity is not None
    try:
        path = NodeLayout(root).partition_dir(name)
    except OutsideRoot as exc:
        return PartitionUsage(name, None, None, None, virtual, False, f"outside_root: {exc.reason}")
    if not path.is_dir():
        return PartitionUsage(name, None, None, None, virtual, False)
    if capacity is not None:
        used = used_of(path)
        return PartitionUsage(name, capacity, max(0, capacity - used), used, True, True)
    try:
        vfs = os.statvfs(path)
    except OSError as exc:
        return PartitionUsage(name, None, None, None, False, True, _one_line(exc))
    total = vfs.f_blocks * vfs.f_frsize
    return PartitionUsage(
        name,
        total,
        vfs.f_bavail * vfs.f_frsize,
        total - vfs.f_bfree * vfs.f_frsize,
        False,
        True,
    )

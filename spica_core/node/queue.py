"""The queue of a node: one scan of ``queue/`` into typed entries, and the moves that change
a stack's state without ever showing it half-done (DESIGN §3).

A stack's state is the suffix of its queue file; an operator action that rewrites the record
while moving it goes through a hidden ``.moving`` name (:func:`move_with_record`), which a
scan reports as the state the record already says.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import msgspec

from spica_core.names import is_valid_name, validate_name
from spica_core.node.files import StatCache, count_lines, one_line
from spica_core.node.host import boot_id, hostname, iso_utc, pid_alive
from spica_core.node.layout import MOVING_SUFFIX, NodeLayout, OutsideRoot
from spica_core.node.protocol import (
    ClaimRecord,
    ClaimSeen,
    ErrorRecord,
    LaunchRecord,
    QueueEntry,
)
from spica_core.node.records import (
    claim_alive,
    daemon_alive,
    read_attempt,
    read_progress,
    read_record,
    write_record,
)
from spica_core.states import SUFFIX, StackState, parse_queue_file_name


@dataclass(frozen=True)
class QueueScan:
    """One pass over ``queue/``: the entries of the states asked for, and every file counted."""

    entries: list[QueueEntry]
    counts: dict[str, int]


#: Seconds a ``.processing`` may hold no valid claim before it counts as stale: a daemon
#: renames first and writes its claim just after (spica_core.daemon.claims).
CLAIM_GRACE = 10.0


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
                                stack=move.stack,
                                state=move.target,
                                mtime=iso_utc(move.ctime),
                                malformed=move.describe(),
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
                    QueueEntry(
                        stack=stack,
                        state=state,
                        mtime=iso_utc(st.st_mtime),
                        malformed="not a regular file",
                    )
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
_STATE_RECORDS: dict[StackState, tuple[type[msgspec.Struct], bool]] = {
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
    src: Path, dst: Path, record: msgspec.Struct, *, won: Callable[[], None] | None = None
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
    record: msgspec.Struct | None = None
    progress = lines = None
    if state in _STATE_RECORDS:
        kind, empty_ok = _STATE_RECORDS[state]
        record, why = read_record(path, kind, empty_ok=empty_ok)
        if why:
            notes.append(why)
    if state is StackState.COMPLETED:
        # The claim that ran it stays in the ``.processed``; legacy ones hold nothing.
        record, _ = read_record(path, ClaimRecord, empty_ok=True)
    claim = None
    if isinstance(record, ClaimRecord):
        # Whether the claimer lives matters only while it runs: a completed one is history.
        running = state is StackState.RUNNING
        claim = ClaimSeen(
            **msgspec.structs.asdict(record),
            alive=claim_alive(record) if running else False,
            daemon_alive=daemon_alive(record) if running else None,
        )
    if state is StackState.RUNNING:
        progress, lines, why = _progress_of(layout, stack, line_cache)
        if why:
            notes.append(why)
    return QueueEntry(
        stack=stack,
        state=state,
        mtime=iso_utc(st.st_mtime),
        launch=record if isinstance(record, LaunchRecord) else None,
        claim=claim,
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
        why = "; ".join(filter(None, [why, f"commands.sh: {one_line(exc)}"]))
    return progress, lines, why

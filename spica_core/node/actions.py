"""Operator actions as they happen on a node: the atomic renames behind launch, requeue,
unlock and remove, and the staging of a stack's commands.

The agent calls these for the operations API (spica_core.operations). On the node the rename
is the commit point: whoever renames first wins, the other gets ``wrong_state`` with what
the stack has become and, when the record says so, who did it and when. Every function
accepts ``dry_run``: it checks everything and reports what it would change, changing nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from spica_core.errors import StackStateError
from spica_core.node.batch_layout import BatchLayout
from spica_core.node.files import atomic_write
from spica_core.node.host import iso_utc
from spica_core.node.layout import (
    MAX_COMMANDS_BYTES,
    NodeLayout,
    OutsideRoot,
    unit_workdir_problem,
)
from spica_core.node.locks import NODE_LOCK, node_lock
from spica_core.node.protocol import (
    ClaimRecord,
    Deletion,
    EndedRun,
    ErrorCode,
    ErrorRecord,
    LaunchRecord,
    LockRecord,
    Orphan,
    ProtocolError,
    RemovedRecord,
    StackChange,
    StageResult,
    UnitRecord,
    UnlockQfinResult,
)
from spica_core.node.queue import CLAIM_GRACE, find_interrupted_moves, move_with_record
from spica_core.node.records import claim_alive, daemon_alive, read_record, write_record
from spica_core.node.stack_files import (
    KILLED_EXIT_CODE,
    OrphanSurvived,
    RunningLine,
    StackFileError,
    clear_running,
    command_text,
    kill_orphan_line,
    live_orphan_line,
    read_commands,
    read_running,
)
from spica_core.states import SUFFIX, Action, Actor, StackState, check_transition

MAX_INPUTS = 2000


PAST = {Action.REQUEUE: "requeued", Action.LAUNCH: "launched"}


def _wrong_state(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.WRONG_STATE, message)


@dataclass(frozen=True)
class QueueState:
    """The stack's queue file as found: its state (PLANNED when there is none) and path."""

    state: StackState
    path: Path | None


#: Seconds a caller waits for another agent's move of the same stack to end (it takes
#: milliseconds) before it is refused as "being moved".
MOVE_SETTLE = 2.0


def queue_state(layout: NodeLayout, stack: str) -> QueueState:
    """Which queue file the stack has. Several at once is drift; the most advanced wins.

    A stack with no queue file but a ``.moving`` one is not absent: another agent is moving
    it (waited for, up to MOVE_SETTLE seconds) or one died half-way (refused, the daemon
    finishes that move).
    """
    deadline = time.monotonic() + MOVE_SETTLE
    while True:
        found = _queue_files(layout, stack)
        if found:
            return QueueState(*found[0])
        moves = find_interrupted_moves(layout, stack)
        if not moves:
            # A move may have ended between the two looks: absent only if still absent.
            found = _queue_files(layout, stack)
            if found:
                return QueueState(*found[0])
            return QueueState(StackState.PLANNED, None)
        if time.monotonic() > deadline or not any(m.mover_alive() for m in moves):
            raise _wrong_state(f"stack {stack}: {moves[0].describe()}")
        time.sleep(0.01)


#: The queue states in the order one wins over another when a stack has several files.
_ADVANCED_FIRST = (StackState.RUNNING, StackState.FAILED, StackState.PENDING, StackState.COMPLETED)


def _queue_files(layout: NodeLayout, stack: str) -> list[tuple[StackState, Path]]:
    if isinstance(layout, BatchLayout):
        return layout.queue_files(stack, _ADVANCED_FIRST)
    return [
        (state, layout.queue_file(stack, state))
        for state in _ADVANCED_FIRST
        if layout.queue_file(stack, state).exists()
    ]


def _who(layout: NodeLayout, stack: str, current: QueueState) -> str:
    """'by USER at TIME' from the record the last mover left, when it left one."""
    if current.path is None:
        removed = removed_record(layout, stack)
        return f" (removed by {removed.by} at {removed.removed_at})" if removed else ""
    if current.state is StackState.PENDING:
        record, _ = read_record(current.path, LaunchRecord, empty_ok=True)
        if record is not None:
            return f" by {record.by} at {record.launched_at}"
    if current.state is StackState.RUNNING:
        claim, _ = read_record(current.path, ClaimRecord)
        if claim is not None:
            return f" (claimed by pid {claim.pid} on {claim.host} at {claim.started_at})"
    mtime = iso_utc(current.path.stat().st_mtime) if current.path.exists() else "?"
    return f" (since {mtime})"


def _require(
    layout: NodeLayout, stack: str, action: Action, target: StackState, *, stale: bool = False
) -> QueueState:
    current = queue_state(layout, stack)
    try:
        check_transition(stack, current.state, target, Actor.OPERATOR, action, stale=stale)
    except StackStateError as exc:
        done = {
            Action.REQUEUE: StackState.PENDING,
            Action.LAUNCH: StackState.PENDING,
        }.get(action)
        if done is not None and current.state is done:
            raise _wrong_state(
                f"stack {stack} is already {current.state}: {PAST[action]}"
                f"{_who(layout, stack, current)}"
            ) from None
        raise _wrong_state(f"{exc}{_who(layout, stack, current)}") from None
    return current


def _rename(src: Path, dst: Path, stack: str, layout: NodeLayout) -> None:
    """The commit point. A missing source means another actor moved the stack first."""
    if dst.exists():
        raise _wrong_state(f"stack {stack}: {dst.name} already exists")
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        raise _changed_meanwhile(stack, layout) from None


def _changed_meanwhile(stack: str, layout: NodeLayout) -> ProtocolError:
    now = queue_state(layout, stack)
    return _wrong_state(
        f"stack {stack} changed meanwhile: now {now.state}{_who(layout, stack, now)}"
    )


def _move_with_record(
    src: Path,
    dst: Path,
    record: msgspec.Struct,
    stack: str,
    layout: NodeLayout,
    won: Callable[[], None] | None = None,
) -> None:
    """:func:`move_with_record`, refused with what the stack became when another actor's
    rename won. ``won`` holds the side effects that only the winner may have (a rewound
    ``progress``)."""
    # The destination already there means another actor's move won meanwhile.
    if dst.exists() or not move_with_record(src, dst, record, won=won):
        raise _changed_meanwhile(stack, layout)


def _rel(layout: NodeLayout, path: Path | None) -> str | None:
    return None if path is None else layout.relative(path)


def _move(
    layout: NodeLayout, stack: str, current: QueueState, target: StackState, **more: Any
) -> StackChange:
    rename = None
    if current.path is not None and target in SUFFIX:
        rename = (_rel(layout, current.path), f"queue/{stack}.{SUFFIX[target]}")
    return StackChange(
        stack=stack, from_=current.state.value, to=target.value, rename=rename, **more
    )


# ----------------------------------------------------------------------------- actions


def stage(
    layout: NodeLayout,
    stack: str,
    data: bytes,
    inputs: list[str] | None,
    *,
    unit: UnitRecord | None = None,
    dry_run: bool = False,
) -> StageResult:
    """Write ``stacks/<stack>/commands.sh`` (and ``inputs``, ``unit.json``) of a planned
    stack.

    Refused once the stack has a queue file: commands of a launched stack never change
    under the daemon (the seed's FAQ: remove it first). The size limit is the daemon's.
    """
    current = queue_state(layout, stack)
    if current.state is not StackState.PLANNED:
        where = f" (queue/{current.path.name})" if current.path else ""
        raise _wrong_state(
            f"stack {stack} is {current.state}{where}: its commands cannot change (remove it first)"
        )
    if len(data) > MAX_COMMANDS_BYTES:
        raise ProtocolError(
            ErrorCode.BAD_ARGS, f"commands of {len(data)} bytes, at most {MAX_COMMANDS_BYTES}"
        )
    workdir = None if unit is None else unit.workdir
    if workdir is not None and (why := unit_workdir_problem(workdir, stack)):
        raise ProtocolError(ErrorCode.BAD_ARGS, why)
    try:
        commands = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_ARGS, "commands are not UTF-8 text") from None
    if "\0" in commands:
        raise ProtocolError(ErrorCode.BAD_ARGS, "commands contain a NUL byte")
    lines = commands.count("\n") + (0 if commands.endswith("\n") or not commands else 1)
    result = StageResult(stack=stack, lines=lines, commands=f"stacks/{stack}/commands.sh")
    if dry_run:
        return result
    directory = layout.stack_dir(stack)
    directory.mkdir(parents=True, exist_ok=True)
    # A stack of this name exists again: an earlier remove no longer speaks for it.
    layout.removed_file(stack).unlink(missing_ok=True)
    # New commands start from line 1: a resume point of older commands means nothing.
    layout.progress_file(stack).unlink(missing_ok=True)
    # As given, byte for byte (as `stack add` writes locally): a last line may lack its "\n".
    atomic_write(layout.commands_file(stack), data)
    inputs_file = layout.resolve("stacks", stack, "inputs")
    if inputs:
        atomic_write(inputs_file, "".join(f"{p}\n" for p in inputs).encode("utf-8"))
    else:
        with contextlib.suppress(FileNotFoundError):
            inputs_file.unlink()
    if unit is not None:
        write_record(layout.unit_file(stack), unit)
    else:
        layout.unit_file(stack).unlink(missing_ok=True)
    return result


def launch(
    layout: NodeLayout, stack: str, priority: int, by: str, *, dry_run: bool = False
) -> StackChange:
    """planned -> pending: create ``<stack>.spica`` (exclusively) for staged commands."""
    current = _require(layout, stack, Action.LAUNCH, StackState.PENDING)
    if not layout.commands_file(stack).is_file():
        raise ProtocolError(
            ErrorCode.NOT_FOUND, f"stack {stack} has no commands.sh on this node (stage it first)"
        )
    result = _move(layout, stack, current, StackState.PENDING, create=f"queue/{stack}.spica")
    if dry_run:
        return result
    record = LaunchRecord(stack=stack, priority=priority, launched_at=iso_utc(), by=by)
    path = layout.queue_file(stack, StackState.PENDING)
    try:
        write_record(path, record, exclusive=True)
    except FileExistsError:
        raise _wrong_state(f"{path.name} already exists") from None
    return result


def requeue(
    layout: NodeLayout,
    stack: str,
    priority: int,
    by: str,
    from_start: bool,
    *,
    dry_run: bool = False,
) -> StackChange:
    """failed -> pending, resuming after ``progress`` (or from line 1 with ``from_start``)."""
    current = _require(layout, stack, Action.REQUEUE, StackState.PENDING)
    assert current.path is not None
    error, _ = read_record(current.path, ErrorRecord)
    result = _move(
        layout,
        stack,
        current,
        StackState.PENDING,
        from_start=from_start,
        resume_line=1 if from_start or error is None else error.line,
    )
    if dry_run:
        return result

    def rewind() -> None:
        # Only once this requeue has won the rename: a loser must not rewind the winner's.
        if from_start and layout.stack_dir(stack).exists():
            atomic_write(layout.progress_file(stack), b"0\n")

    record = LaunchRecord(stack=stack, priority=priority, launched_at=iso_utc(), by=by)
    _move_with_record(
        current.path, layout.queue_file(stack, StackState.PENDING), record, stack, layout, rewind
    )
    return result


def unlock(
    layout: NodeLayout,
    stack: str,
    to: StackState,
    by: str,
    priority: int = 0,
    *,
    dry_run: bool = False,
) -> StackChange:
    """A stale running stack (its claimer is dead or the node rebooted) -> failed or pending.

    As the daemon's own recovery (spica_core.daemon.claims.recover) does, under the node lock:
    staleness is checked again, the line the dead daemon left running (``running.json``) is
    killed, then the stack moves. Otherwise a requeued stack would run that line a second time
    beside the orphan. The dry run names the orphan it would kill.
    """
    if dry_run:
        return _unlock(layout, stack, to, by, priority, dry_run=True)
    with node_lock(layout):
        return _unlock(layout, stack, to, by, priority, dry_run=False)


def _unlock(
    layout: NodeLayout, stack: str, to: StackState, by: str, priority: int, *, dry_run: bool
) -> StackChange:
    current = queue_state(layout, stack)
    claim = None
    if current.state is StackState.RUNNING and current.path is not None:
        claim, _ = read_record(current.path, ClaimRecord)
    if claim is None:
        # A daemon renames first and writes its claim just after: a claim-less file is only
        # stale once it is older than the daemon's grace.
        young = current.path is not None and (
            time.time() - current.path.stat().st_ctime < CLAIM_GRACE
        )
        stale = current.state is StackState.RUNNING and not young
    else:
        stale = not claim_alive(claim) and daemon_alive(claim) is not True
    if current.state is StackState.RUNNING and not stale:
        who = (
            f"pid {claim.pid} on {claim.host}, daemon pid {claim.daemon_pid}"
            if claim
            else "a claim being written"
        )
        raise _wrong_state(
            f"stack {stack} is running and its claimer is alive ({who}): "
            "only a stale stack can be unlocked"
        )
    current = _require(layout, stack, Action.UNLOCK, to, stale=stale)
    assert current.path is not None
    holder = f"pid {claim.pid} on {claim.host}" if claim else "an unreadable claim"
    orphan = live_orphan_line(layout, stack)
    result = _move(
        layout,
        stack,
        current,
        to,
        claim=claim,
        orphan=_orphan(layout, stack, orphan) if orphan else None,
    )
    if dry_run:
        return result
    line = read_running(layout, stack)
    try:
        killed = kill_orphan_line(layout, stack)
    except OrphanSurvived as exc:
        raise _wrong_state(f"stack {stack} not unlocked: {exc.reason}") from None
    clear_running(layout, stack)
    record: ErrorRecord | LaunchRecord
    if to is StackState.FAILED:
        record = ErrorRecord(
            line=None, exit_code=None, message=f"unlocked by {by}: {holder} was dead"
        )
    else:
        record = LaunchRecord(stack=stack, priority=priority, launched_at=iso_utc(), by=by)
    _move_with_record(current.path, layout.queue_file(stack, to), record, stack, layout)
    return msgspec.structs.replace(
        result,
        orphan=_orphan(layout, stack, killed) if killed is not None else result.orphan,
        ended_run=_ended_run(line, killed, claim),
    )


def _orphan(layout: NodeLayout, stack: str, line: RunningLine) -> Orphan:
    """The orphan line as a plan shows it: line, process group, attempt, command text."""
    try:
        command = command_text(read_commands(layout, stack)[line.line - 1])
    except (StackFileError, IndexError):
        command = None
    return Orphan(
        line=line.line,
        pgid=line.pid,
        attempt=line.attempt,
        started_at=line.started_at,
        command=command,
    )


def _ended_run(
    line: RunningLine | None, killed: RunningLine | None, claim: ClaimRecord | None
) -> EndedRun | None:
    """The ``stack_run`` row this unlock ends (dbspica closes it): the claim's attempt, the
    line that was running and, when this unlock killed it, its exit code."""
    attempt = line.attempt if line is not None else claim.attempt if claim else None
    if attempt is None:
        return None
    return EndedRun(
        attempt=attempt,
        line=line.line if line is not None else None,
        exit_code=KILLED_EXIT_CODE if killed is not None else None,
        ended_at=iso_utc(),
    )


def unlock_qfin(
    layout: NodeLayout, partition: str, by: str, *, dry_run: bool = False
) -> UnlockQfinResult:
    """Remove a partition's QFin lock whose holder is gone."""
    path = layout.qfin_lock(partition)
    if not path.exists():
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no QFin lock on partition {partition}")
    holder, _ = read_record(path, LockRecord, empty_ok=True)
    if holder is not None and claim_alive(holder):
        raise _wrong_state(
            f"QFin lock of {partition} is held by live pid {holder.pid} on {holder.host}"
        )
    result = UnlockQfinResult(partition=partition, delete=[layout.relative(path)], holder=holder)
    if not dry_run:
        path.unlink(missing_ok=True)
    return result


def _tree_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
    return files, size


def removed_record(layout: NodeLayout, stack: str) -> RemovedRecord | None:
    """Who removed ``stack`` from this node and when, if it was removed and not staged since."""
    record, _ = read_record(layout.removed_file(stack), RemovedRecord)
    return record


def remove(
    layout: NodeLayout,
    stack: str,
    purge: list[str],
    by: str = "unknown",
    stack_id: int | None = None,
    *,
    dry_run: bool = False,
) -> StackChange:
    """Delete a stack's queue file, its directory (commands, logs, outputs) and, when asked,
    the input files listed in ``purge`` (paths inside the root). Refused while running.

    Two removes of one stack have one winner: under the node lock the winner takes the queue
    file and the directory away (renames) and leaves ``removed/<stack>.json``; the loser
    finds the stack gone and is told by whom and when. A stack absent from the node with
    such a record for it (the same dbspica id, when both are known) was removed already.
    """
    # A dry run too: never a remove seen half-done. Yet a dry run creates nothing: with no
    # lock file, no remove (nor unlock, nor claim recovery) has held the lock yet; the
    # first one, starting just now, is the only one such a dry run could see half-way.
    unlocked = dry_run and not (layout.locks_dir() / NODE_LOCK).exists()
    with contextlib.nullcontext() if unlocked else node_lock(layout):
        result, trash = _remove(layout, stack, purge, by, stack_id, dry_run=dry_run)
    # The deleting itself (maybe many files) is outside the lock: nobody sees those names.
    # What an earlier remove renamed away and never deleted (killed meanwhile) goes too.
    for path in [*trash, *_left_by_a_killed_remove(trash)]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return result


def _left_by_a_killed_remove(trash: list[Path]) -> list[Path]:
    """The names only a remove gives (``.<queue file>.removed``, ``.<stack>.*.removing``) in
    the directories this one renamed into, but not its own: trash whose remove was killed
    between its rename and its deleting."""
    mine = set(trash)
    found: list[Path] = []
    for directory in {path.parent for path in trash if _renamed_away(path.name)}:
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if _renamed_away(entry.name) and Path(entry.path) not in mine:
                    found.append(Path(entry.path))
    return found


def _renamed_away(name: str) -> bool:
    return name.startswith(".") and name.endswith((".removed", ".removing"))


def _unit_workdir(layout: NodeLayout, stack: str) -> Path | None:
    """The work directory the stack's ``unit.json`` names (a co-add's, on its partition),
    when it obeys :func:`unit_workdir_problem` and is that very directory (no symlink on the
    way); else None, and nothing of it is deleted."""
    record, _ = read_record(layout.unit_file(stack), UnitRecord)
    if record is None or record.workdir is None or unit_workdir_problem(record.workdir, stack):
        return None
    try:
        path = layout.resolve(record.workdir)
    except OutsideRoot:
        return None
    # Only the very path named: through a symlink it would be some other directory.
    return path if path.is_dir() and layout.relative(path) == record.workdir else None


def _remove(
    layout: NodeLayout,
    stack: str,
    purge: list[str],
    by: str,
    stack_id: int | None,
    *,
    dry_run: bool,
) -> tuple[StackChange, list[Path]]:
    """The remove's plan and, applied, the renamed-away paths left to delete."""
    current = _require(layout, stack, Action.REMOVE, StackState.REMOVED)
    directory = layout.stack_dir(stack)
    removed = removed_record(layout, stack)
    if (
        current.path is None
        and not directory.exists()
        and removed is not None
        and (stack_id is None or removed.stack_id in (None, stack_id))
    ):
        raise _wrong_state(
            f"stack {stack} is already removed: removed by {removed.by} at {removed.removed_at}"
        )
    deletes: list[Deletion] = []
    if current.path is not None:
        deletes.append(
            Deletion(path=layout.relative(current.path), files=1, bytes=current.path.stat().st_size)
        )
    workdir = _unit_workdir(layout, stack) if directory.exists() else None
    for tree in (directory, workdir):
        if tree is not None and tree.exists():
            files, size = _tree_size(tree)
            deletes.append(Deletion(path=layout.relative(tree), files=files, bytes=size))
    inputs = []
    for rel in purge[:MAX_INPUTS]:
        path = layout.resolve(rel)
        if path.is_file():
            inputs.append(path)
            deletes.append(Deletion(path=layout.relative(path), files=1, bytes=path.stat().st_size))
    result = StackChange(
        stack=stack,
        from_=current.state.value,
        to=StackState.REMOVED.value,
        delete=deletes,
        bytes=sum(d.bytes for d in deletes),
    )
    if dry_run:
        return result, []
    trash: list[Path] = []
    if current.path is not None:
        # The queue file first: once it is gone no daemon can claim the stack.
        hidden = current.path.with_name(f".{current.path.name}.removed")
        _rename(current.path, hidden, stack, layout)
        trash.append(hidden)
    for tree in (workdir, directory):  # its unit.json, naming the work directory, last
        if tree is not None and tree.exists():
            # Onto a new empty directory of a name nobody else uses (rename replaces it).
            hidden = Path(
                tempfile.mkdtemp(prefix=f".{stack}.", suffix=".removing", dir=tree.parent)
            )
            os.rename(tree, hidden)
            trash.append(hidden)
    record = RemovedRecord(
        stack=stack, by=by, removed_at=iso_utc(), state=current.state.value, stack_id=stack_id
    )
    layout.removed_file(stack).parent.mkdir(exist_ok=True)
    write_record(layout.removed_file(stack), record)
    return result, trash + inputs

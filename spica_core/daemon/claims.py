"""Every move the daemon makes in its node's ``queue/``, each one an atomic rename.

The claim is ``<stack>.spica`` → ``<stack>.processing``: of two daemons on one root only one
rename can succeed (the loser finds no source), so a stack never runs twice at once. The
winner then writes its :class:`ClaimRecord` into the ``.processing`` (write_record). For
that moment the file holds no claim, so a ``.processing`` without a valid claim is stale only
once its ctime (which rename and replace update) is older than :data:`CLAIM_GRACE`; the
same holds whenever a daemon rewrites a ``.processing`` before renaming it away.

Every move asks :func:`spica_core.states.check_transition` first. Moving a claim this daemon
does not own (recovering a dead daemon's claim) happens under the node lock
``locks/daemon.lock``, after checking again that it is stale, so two daemons never recover
the same claim, and the orphan line of a dead daemon is killed before the stack moves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from spica_core.errors import InvalidName
from spica_core.names import is_valid_name, validate_name
from spica_core.node.files import file_kind, read_small
from spica_core.node.host import boot_id, hostname, iso_utc, pid_alive
from spica_core.node.layout import NodeLayout
from spica_core.node.locks import node_lock
from spica_core.node.protocol import ClaimRecord, ErrorRecord, LaunchRecord
from spica_core.node.queue import (
    CLAIM_GRACE,
    InterruptedMove,
    find_interrupted_moves,
    move_with_record,
)
from spica_core.node.records import claim_alive, read_record, write_record
from spica_core.node.stack_files import (
    KILLED_EXIT_CODE,
    StackFileError,
    clear_running,
    kill_orphan_line,
    next_attempt,
    read_running,
    read_stack_progress,
)
from spica_core.states import (
    SUFFIX,
    Action,
    Actor,
    StackState,
    check_transition,
    parse_queue_file_name,
)

log = logging.getLogger("spica.daemon")

#: Seconds a ``.spica`` that holds no launch record is left alone: it may be being written
#: (a requeue renames ``.error`` to ``.spica``, then writes the launch). After that, garbage
#: is rejected and any other JSON object is taken as a legacy launch.
SETTLE_GRACE = 2.0
#: ``by`` of the launch record put back for a legacy (empty) ``.spica``.
LEGACY_LAUNCHER = "legacy"

P, R, C, F = StackState.PENDING, StackState.RUNNING, StackState.COMPLETED, StackState.FAILED


@dataclass(frozen=True)
class PendingStack:
    """A ``.spica`` waiting in the queue; ``malformed`` says why its record is unusable."""

    stack: str
    priority: int
    mtime: float
    launch: LaunchRecord
    #: ``inode:mtime_ns`` of the file: a new launch or a requeue is a new identity.
    identity: str
    malformed: str | None = None
    #: Seconds since the file last changed (mtime or ctime).
    age: float = 0.0
    #: Its content is JSON but no launch record: wait SETTLE_GRACE before taking it.
    unsettled: bool = False


@dataclass(frozen=True)
class Claim:
    """A stack this daemon owns: its ``.processing`` holds ``record``."""

    stack: str
    attempt: int
    record: ClaimRecord
    launch: LaunchRecord


@dataclass(frozen=True)
class StaleClaim:
    stack: str
    claim: ClaimRecord | None
    why: str


@dataclass(frozen=True)
class Recovered:
    stack: str
    state: StackState
    #: The line that was running (the resume point), and the dead claim's attempt.
    line: int
    attempt: int | None
    message: str
    killed_pid: int | None
    #: The ``stack_run`` row the dead claim left open: its line (None when ``running.json``
    #: had no valid record) and exit code (KILLED_EXIT_CODE when the orphan was killed).
    run_line: int | None = None
    run_exit_code: int | None = None


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class SkippedEntry:
    """An entry of ``queue/`` that is no stack the daemon can take or recover: a symbolic
    link, a directory, a FIFO or device, a bad name, an unreadable file. It is left as it is
    (never followed, never renamed) and reported; ``identity`` tells a new entry of the same
    name from the one already reported."""

    name: str
    identity: str
    reason: str

    @property
    def message(self) -> str:
        return f"queue/{_shown(self.name)} skipped: {self.reason}; left as it is (remove it)"


@dataclass(frozen=True)
class PendingScan:
    """One pass over ``queue/``: the pending stacks, and the entries left alone."""

    pending: list[PendingStack]
    skipped: list[SkippedEntry]


def list_pending(layout: NodeLayout, now: float | None = None) -> list[PendingStack]:
    """Every ``.spica`` of the queue, by priority (highest first), then age (oldest first)."""
    return scan_pending(layout, now).pending


def scan_pending(layout: NodeLayout, now: float | None = None) -> PendingScan:
    """The pending stacks (as :func:`list_pending`) and every queue entry, of any state, that
    cannot be a stack: one bad entry must never stop the node, so it is set aside here.

    Only names are read for entries of other states (completed stacks pile up by thousands):
    the entry type comes from the directory listing, without a stat.
    """
    now = time.time() if now is None else now
    pending: list[PendingStack] = []
    skipped: list[SkippedEntry] = []
    try:
        scan = os.scandir(layout.queue_dir())
    except FileNotFoundError:
        return PendingScan(pending, skipped)
    with scan:
        for dirent in scan:
            found = _scan_entry(layout, dirent, now)
            if isinstance(found, SkippedEntry):
                skipped.append(found)
            elif found is not None:
                pending.append(found)
    pending.sort(key=lambda p: (-p.priority, p.mtime, p.stack))
    skipped.sort(key=lambda s: s.name)
    return PendingScan(pending, skipped)


def _scan_entry(
    layout: NodeLayout, dirent: os.DirEntry[str], now: float
) -> PendingStack | SkippedEntry | None:
    """What one directory entry of ``queue/`` is to the daemon (None: nothing to do)."""
    parsed = parse_queue_file_name(dirent.name)
    if parsed is None or dirent.name.startswith("."):
        return None  # not a queue file (hidden ones are the agent's and daemon's temporaries)
    try:
        identity = str(dirent.inode())
        regular = dirent.is_file(follow_symlinks=False)
        if not is_valid_name(parsed[0]):
            return SkippedEntry(dirent.name, identity, "not a valid stack name")
        if not regular:
            return SkippedEntry(dirent.name, identity, _not_regular(dirent))
        if parsed[1] is not P:
            return None
        st = dirent.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None  # renamed meanwhile (claimed, requeued): the next scan sees it
    except OSError as exc:
        return SkippedEntry(dirent.name, "", f"cannot be examined: {_why(exc)}")
    return _pending_entry(layout, parsed[0], Path(dirent.path), st, now)


def _not_regular(dirent: os.DirEntry[str]) -> str:
    """What a queue entry that is not a regular file is (its link target is only read)."""
    mode = dirent.stat(follow_symlinks=False).st_mode
    if stat.S_ISLNK(mode):
        return f"a symbolic link (to {_shown(os.readlink(dirent.path))}), not a regular file"
    return f"{file_kind(mode)}, not a regular file"


def _shown(text: str) -> str:
    """A name or path fit for a log line: quoted and escaped when it holds odd characters."""
    return text if text.isprintable() and " " not in text else ascii(text)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _pending_entry(
    layout: NodeLayout, stack: str, path: Path, st: os.stat_result, now: float
) -> PendingStack | SkippedEntry:
    """A ``.spica`` is malformed only when it is not a small regular file holding a JSON
    object (or nothing). Any other JSON object is taken as a legacy launch once it has
    settled: the seed's manual requeue renames ``.error`` back to ``.spica``, error record
    and all."""
    identity = f"{st.st_ino}:{st.st_mtime_ns}"
    age = now - max(st.st_mtime, st.st_ctime)
    legacy = LaunchRecord(
        stack=stack, priority=0, launched_at=iso_utc(st.st_mtime), by=LEGACY_LAUNCHER
    )

    def bad(why: str) -> PendingStack:
        return PendingStack(stack, 0, st.st_mtime, legacy, identity, why, age)

    if not stat.S_ISREG(st.st_mode):
        return bad("not a regular file")
    try:
        data = read_small(path)
    except FileNotFoundError:
        return bad("vanished")  # claimed meanwhile: the claim fails quietly, age says wait
    except OSError as exc:  # unreadable (permissions, I/O): not the stack's content to judge
        return SkippedEntry(path.name, identity, f"cannot be read: {_why(exc)}")
    except ValueError as exc:
        return bad(str(exc))
    if not data.strip():
        return PendingStack(stack, 0, st.st_mtime, legacy, identity, None, age)
    try:
        content = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return bad("not JSON")
    if not isinstance(content, dict):
        return bad("not a JSON object")
    unsettled = False
    try:
        launch = msgspec.convert(content, LaunchRecord)
    except msgspec.ValidationError:
        priority = content.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool):
            priority = 0
        launch = msgspec.structs.replace(legacy, priority=priority)
        unsettled = True
    if launch.stack != stack:
        launch = msgspec.structs.replace(launch, stack=stack)
    return PendingStack(stack, launch.priority, st.st_mtime, launch, identity, None, age, unsettled)


def other_queue_files(layout: NodeLayout, stack: str, state: StackState) -> list[str]:
    """The stack's queue files in states other than ``state`` (normally none: drift)."""
    queue = layout.queue_dir()
    names = [f"{validate_name(stack)}.{SUFFIX[other]}" for other in SUFFIX if other is not state]
    return [name for name in names if os.path.lexists(queue / name)]


# --------------------------------------------------------------------------- own moves


def claim(layout: NodeLayout, pending: PendingStack) -> Claim | None:
    """Claim ``pending`` for this process; None when another daemon's rename won.

    Refuses (None, logged) to rename over a ``.processing`` that already exists.
    """
    stack = pending.stack
    check_transition(stack, P, R, Actor.DAEMON, Action.CLAIM)
    source, target = layout.queue_file(stack, P), layout.queue_file(stack, R)
    if target.exists():
        if source.exists():  # else: another daemon's claim won the race, nothing to say
            log.warning("%s: not claimed: %s already exists", stack, target.name)
        return None
    try:
        os.rename(source, target)  # the commit point: only one daemon's rename succeeds
    except FileNotFoundError:
        return None
    try:
        attempt = next_attempt(layout, stack)
        record = ClaimRecord(
            pid=os.getpid(),
            host=hostname(),
            boot_id=boot_id(),
            started_at=iso_utc(),
            daemon_pid=os.getpid(),
            attempt=attempt,
            priority=pending.launch.priority,
            launched_at=pending.launch.launched_at,
            launched_by=pending.launch.by,
        )
        write_record(target, record)
    except (OSError, StackFileError):
        # Put the launch back rather than leave a claim nobody runs.
        with contextlib.suppress(OSError):
            write_record(target, pending.launch)
            os.rename(target, source)
        raise
    return Claim(stack, attempt, record, pending.launch)


def complete(layout: NodeLayout, owned: Claim) -> None:
    """running → completed; the ``.processed`` keeps the claim (who ran it, when)."""
    check_transition(owned.stack, R, C, Actor.DAEMON, Action.COMPLETE)
    os.rename(layout.queue_file(owned.stack, R), layout.queue_file(owned.stack, C))


def fail(layout: NodeLayout, owned: Claim, error: ErrorRecord) -> None:
    """running → failed: the error record is written, then the file renamed to ``.error``."""
    check_transition(owned.stack, R, F, Actor.DAEMON, Action.FAIL)
    running = layout.queue_file(owned.stack, R)
    write_record(running, error)
    os.rename(running, layout.queue_file(owned.stack, F))


def release(layout: NodeLayout, owned: Claim) -> None:
    """running → pending, as the daemon stops: the same launch is put back, resumable.

    The owner ending its own claim is the stale case by definition (its process is about to
    exit), hence ``stale=True`` for the RECOVER transition.
    """
    check_transition(owned.stack, R, P, Actor.DAEMON, Action.RECOVER, stale=True)
    running = layout.queue_file(owned.stack, R)
    write_record(running, owned.launch)
    os.rename(running, layout.queue_file(owned.stack, P))


def reject(layout: NodeLayout, pending: PendingStack, message: str) -> bool:
    """pending → failed for a stack whose files cannot run; False if it was claimed first."""
    check_transition(pending.stack, P, F, Actor.DAEMON, Action.REJECT)
    # Hidden while the error record is written: a reader never sees a .error that still
    # holds the launch.
    return move_with_record(
        layout.queue_file(pending.stack, P),
        layout.queue_file(pending.stack, F),
        ErrorRecord(line=None, exit_code=None, message=message),
    )


# --------------------------------------------------------------------------- recovery


def stale_reason(
    layout: NodeLayout, stack: str, grace: float = CLAIM_GRACE, now: float | None = None
) -> StaleClaim | None:
    """Why the ``.processing`` of ``stack`` is stale, or None (alive, fresh, or gone)."""
    path = layout.queue_file(stack, R)
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    record, why = read_record(path, ClaimRecord)
    if record is not None:
        if claim_alive(record):
            return None
        where = f"pid {record.pid} on {record.host}"
        if record.host == hostname() and record.boot_id != boot_id():
            where += " before a reboot"
        return StaleClaim(stack, record, f"its daemon ({where}) is dead")
    age = (time.time() if now is None else now) - max(st.st_mtime, st.st_ctime)
    if age < grace:
        return None
    return StaleClaim(stack, None, f"it holds no valid claim ({why}) for {age:.0f} s")


def find_stale(
    layout: NodeLayout, grace: float = CLAIM_GRACE, now: float | None = None
) -> list[StaleClaim]:
    """The stale ``.processing`` files of the queue (dead pid, other boot, no claim)."""
    stale: list[StaleClaim] = []
    try:
        with os.scandir(layout.queue_dir()) as scan:
            # Links, directories…: never followed; scan_pending reports them.
            names = [d.name for d in scan if d.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return stale
    for name in sorted(names):
        parsed = parse_queue_file_name(name)
        if parsed is None or parsed[1] is not R:
            continue
        try:
            validate_name(parsed[0])
        except InvalidName:
            continue
        found = stale_reason(layout, parsed[0], grace, now)
        if found is not None:
            stale.append(found)
    return stale


def recover(
    layout: NodeLayout, found: StaleClaim, to: StackState, grace: float = CLAIM_GRACE
) -> Recovered | None:
    """Move a stale claim to pending (resumable) or failed; None if it is no longer stale.

    Under the node lock: staleness is checked again, the dead daemon's orphan line (if any
    still runs) is killed, then the file is rewritten and renamed.
    """
    stack = found.stack
    with node_lock(layout):
        again = stale_reason(layout, stack, grace)
        if again is None:
            return None
        check_transition(stack, R, to, Actor.DAEMON, Action.RECOVER, stale=True)
        target = layout.queue_file(stack, to)
        if target.exists():
            log.warning("%s: stale claim not recovered: %s already exists", stack, target.name)
            return None
        running_line = read_running(layout, stack)
        killed = kill_orphan_line(layout, stack)
        clear_running(layout, stack)
        try:
            line = read_stack_progress(layout, stack) + 1
        except StackFileError:
            line = 1
        claim_record = again.claim
        attempt = claim_record.attempt if claim_record else None
        if attempt is None and running_line is not None:
            attempt = running_line.attempt
        message = f"stack {stack} recovered as {to.value}: {again.why} while at line {line}"
        running = layout.queue_file(stack, R)
        if to is P:
            write_record(running, launch_of(stack, claim_record))
        else:
            write_record(running, ErrorRecord(line=line, exit_code=None, message=message))
        os.rename(running, target)
        return Recovered(
            stack,
            to,
            line,
            attempt,
            message,
            killed.pid if killed else None,
            running_line.line if running_line else None,
            KILLED_EXIT_CODE if killed else None,
        )


#: Seconds after which a ``.moving`` file is recovered even though a process of its pid
#: runs (a pid reused after a reboot): a move takes milliseconds.
MOVE_STALE = 120.0


def recover_moves(layout: NodeLayout, now: float | None = None) -> list[InterruptedMove]:
    """Finish or undo the moves operator actions left half-done (the agent died between its
    two renames, spica_core.node.actions._move_with_record); the moves recovered.

    Under the node lock, for each ``.moving`` file whose pid is dead: renamed to the state its
    record is of (the new state when the new record was written, else back to the old one),
    unless the stack has a queue file already (drift: logged, left for an operator).
    """
    moves = find_interrupted_moves(layout)
    if not moves:
        return []
    done: list[InterruptedMove] = []
    with node_lock(layout):
        for move in find_interrupted_moves(layout):
            age = (time.time() if now is None else now) - move.ctime
            if pid_alive(move.pid, hostname(), boot_id()) and age < MOVE_STALE:
                continue  # an agent is moving it now
            others = other_queue_files(layout, move.stack, move.target)
            target = layout.queue_file(move.stack, move.target)
            if others or target.exists():
                log.warning(
                    "%s: %s not recovered: %s exist(s)",
                    move.stack,
                    move.name,
                    ", ".join(others) or target.name,
                )
                continue
            try:
                os.rename(move.path, target)
            except FileNotFoundError:
                continue
            done.append(move)
    return done


def launch_of(stack: str, record: ClaimRecord | None) -> LaunchRecord:
    """The launch a claim was made from (priority, time, by), as recorded in the claim."""
    if record is None:
        return LaunchRecord(stack=stack, priority=0, launched_at=iso_utc(), by="recovered")
    return LaunchRecord(
        stack=stack,
        priority=record.priority or 0,
        launched_at=record.launched_at or record.started_at,
        by=record.launched_by or "recovered",
    )

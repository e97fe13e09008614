"""The files of ``stacks/<stack>/`` the daemon runs from, read by the agent too.

::

    commands.sh     one shell command per physical line, run by ``/bin/sh -c`` (the operator's)
    progress        the last line that succeeded: the resume point (a plain integer)
    logs/NNN.log    output of line NNN (its latest run)
    inputs          optional: one path per line (absolute, or relative to the spica root) that
                    must exist before the stack is claimed; blank lines and ``#`` comments skipped
    attempt         the daemon's claim counter: ``stack_run.attempt`` of the lines a claim runs,
                    kept on the node so numbering never depends on dbspica being up
    check.json      the last failed preflight check: its reason and when to try again
    running.json    the line running now: its process group, so an orphan left by a crashed
                    daemon is killed before the line runs again

Line numbers are physical lines of ``commands.sh`` (as the agent counts them), from 1. Blank
lines and lines whose first non-blank character is ``#`` count as lines but are no-ops: no
process, no log, no ``stack_run`` row.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import msgspec

from spica_core.node import records
from spica_core.node.files import atomic_write, read_small
from spica_core.node.host import boot_id, hostname, pid_alive
from spica_core.node.layout import MAX_COMMANDS_BYTES, NodeLayout
from spica_core.node.records import read_progress, read_record, write_record

INPUTS_FILE = "inputs"
CHECK_FILE = "check.json"
RUNNING_FILE = "running.json"
MAX_INPUTS_BYTES = 4 * 1024 * 1024


class StackFileError(Exception):
    """A stack file the daemon cannot use; ``reason`` is the operator's one-line message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------- commands.sh


def parse_commands(data: bytes) -> list[bytes]:
    """The physical lines of a command file (without ``\\n`` / ``\\r\\n``), or StackFileError.

    Refused: no command at all, NUL bytes (a binary file), text that is not UTF-8.
    """
    if b"\x00" in data:
        return _refuse("is a binary file (NUL bytes), not shell commands")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _refuse(f"is not UTF-8 text (bad byte at offset {exc.start})")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # a final newline ends the last line, it does not start another
    lines = [line.removesuffix(b"\r") for line in lines]
    if all(is_noop(line) for line in lines):
        return _refuse("holds no command (empty, or only blank lines and comments)")
    return lines


def normalize_newlines(data: bytes) -> bytes:
    """``data`` with CRLF line ends made LF (a file saved on Windows), or StackFileError for
    a carriage return elsewhere: ``sh`` would take it as part of the command."""
    data = data.replace(b"\r\n", b"\n")
    at = data.find(b"\r")
    if at >= 0:
        line = data.count(b"\n", 0, at) + 1
        _refuse(f"has a carriage return (CR) inside line {line}: save it with LF line ends")
    return data


def _refuse(reason: str) -> list[bytes]:
    raise StackFileError(f"commands.sh {reason}")


def read_commands(layout: NodeLayout, stack: str) -> list[bytes]:
    """The stack's command lines, or StackFileError saying why they cannot run."""
    path = layout.commands_file(stack)
    try:
        data = read_small(path, MAX_COMMANDS_BYTES)
    except FileNotFoundError:
        raise StackFileError(f"commands.sh missing ({layout.relative(path)})") from None
    except (OSError, ValueError) as exc:
        raise StackFileError(f"commands.sh unreadable: {_why(exc)}") from None
    return parse_commands(data)


def is_noop(line: bytes) -> bool:
    """Blank lines and ``#`` comments: counted as lines, never run."""
    stripped = line.strip()
    return not stripped or stripped.startswith(b"#")


def command_text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- inputs


def read_inputs(layout: NodeLayout, stack: str) -> list[str]:
    """The paths listed in ``inputs`` (none when the file is absent)."""
    path = layout.resolve("stacks", stack, INPUTS_FILE)
    try:
        data = read_small(path, MAX_INPUTS_BYTES)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise StackFileError(f"inputs unreadable: {_why(exc)}") from None
    text = data.decode("utf-8", errors="surrogateescape")
    return [s for s in (ln.strip() for ln in text.splitlines()) if s and not s.startswith("#")]


def missing_inputs(root: Path, inputs: list[str]) -> list[str]:
    """The inputs that do not exist; relative ones are under the spica root. Symlinks are
    followed on purpose: inputs on other nodes are reached through links (the seed's NFS)."""
    return [p for p in inputs if not os.path.exists(p if os.path.isabs(p) else root / p)]


# --------------------------------------------------------------------------- progress, attempt


def write_int_atomic(path: Path, value: int) -> None:
    """Replace ``path`` by ``value`` as text, fsynced: a crash leaves the old or the new."""
    atomic_write(path, f"{value}\n".encode("ascii"))


def read_stack_progress(layout: NodeLayout, stack: str) -> int:
    """The resume point: 0 when ``progress`` is absent or empty (a requeue from the start)."""
    value, why = read_progress(layout.progress_file(stack))
    if why:
        raise StackFileError(f"{why} (remove the file to restart from line 1)")
    return value or 0


def write_progress(layout: NodeLayout, stack: str, line: int) -> None:
    write_int_atomic(layout.progress_file(stack), line)


def read_attempt(layout: NodeLayout, stack: str) -> int:
    value, why = records.read_attempt(layout, stack)
    if why:
        raise StackFileError(f"{why} ({layout.relative(layout.attempt_file(stack))})")
    return value or 0


def next_attempt(layout: NodeLayout, stack: str) -> int:
    """Count one more claim of ``stack``. Called only by the daemon whose rename won the
    claim, so no two processes ever increment it at once."""
    attempt = read_attempt(layout, stack) + 1
    write_int_atomic(layout.attempt_file(stack), attempt)
    return attempt


# --------------------------------------------------------------------------- check.json


class CheckRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Content of ``check.json``: why the stack waits, and not before when to look again."""

    reason: str
    failures: int
    checked_at: str
    retry_at: float
    #: Identity of the ``.spica`` file checked: a new launch or requeue is checked at once.
    launch: str | None = None


def check_path(layout: NodeLayout, stack: str) -> Path:
    return layout.resolve("stacks", stack, CHECK_FILE)


def read_check(layout: NodeLayout, stack: str) -> CheckRecord | None:
    record, _ = read_record(check_path(layout, stack), CheckRecord)
    if record is not None and isinstance(record.retry_at, int | float):
        return record
    return None


def write_check(layout: NodeLayout, stack: str, record: CheckRecord) -> None:
    path = check_path(layout, stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_record(path, record)


def clear_check(layout: NodeLayout, stack: str) -> bool:
    """Forget a failed check (the stack is checked again at the next scan)."""
    try:
        check_path(layout, stack).unlink()
    except FileNotFoundError:
        return False
    return True


# --------------------------------------------------------------------------- running.json


class RunningLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Content of ``running.json``: the line's ``/bin/sh`` leads its own process group."""

    pid: int
    line: int
    attempt: int
    host: str
    boot_id: str
    started_at: str


def running_path(layout: NodeLayout, stack: str) -> Path:
    return layout.resolve("stacks", stack, RUNNING_FILE)


def write_running(layout: NodeLayout, stack: str, record: RunningLine) -> None:
    """Not fsynced: it only matters while this boot's processes exist."""
    write_record(running_path(layout, stack), record, mode=0o644, durable=False)


def read_running(layout: NodeLayout, stack: str) -> RunningLine | None:
    """The line ``running.json`` says runs (alive or not), None without a valid record."""
    record, _ = read_record(running_path(layout, stack), RunningLine)
    return record


def clear_running(layout: NodeLayout, stack: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        running_path(layout, stack).unlink()


#: ``stack_run.exit_code`` of a line killed because its daemon was dead (recovery, unlock):
#: 128 + SIGKILL, as the runner reports any line killed by a signal.
KILLED_EXIT_CODE = 128 + signal.SIGKILL


class OrphanSurvived(StackFileError):
    """An orphan line's process group still runs after SIGKILL: the stack must not move."""


def live_orphan_line(layout: NodeLayout, stack: str) -> RunningLine | None:
    """The line of ``running.json`` when it still runs: its process exists on this host and
    boot, leads its own process group, started before the record was written, and is, by its
    environment, that line of that stack under this root. A pid reused since by another
    process is not."""
    record = read_running(layout, stack)
    if record is None or not pid_alive(record.pid, record.host, record.boot_id):
        return None
    if not _is_line_process(record, stack, layout.root):
        return None
    return record


def kill_orphan_line(layout: NodeLayout, stack: str, timeout: float = 5.0) -> RunningLine | None:
    """Kill the process group of a line a dead daemon left running; its record, or None.

    Raises :class:`OrphanSurvived` when the group is still there after ``timeout`` seconds.
    """
    record = live_orphan_line(layout, stack)
    if record is None:
        return None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _process_exists(record.pid):
        time.sleep(0.02)
    if _process_exists(record.pid):
        raise OrphanSurvived(
            f"line {record.line}'s process group {record.pid} still runs {timeout:.0f} s "
            "after SIGKILL"
        )
    return record


def _is_line_process(record: RunningLine, stack: str, root: Path) -> bool:
    pid = record.pid
    try:
        if os.getpgid(pid) != pid:
            return False  # the line's shell leads its group: this is another process
    except OSError:
        return False
    started = _start_time(pid)
    if started is not None and started > _epoch(record.started_at) + START_SLACK:
        return False  # started after the line was recorded: a reused pid
    import psutil  # here: only an unlock or a recovery looks at other processes

    try:
        env = psutil.Process(pid).environ()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # no access to its environment: pid, host, boot and start time agree
    line_root = env.get("SPICA_ROOT", "")
    return (
        env.get("SPICA_STACK") == stack
        and env.get("SPICA_ATTEMPT") == str(record.attempt)
        # a line of the same stack name under another root (another node, another demo)
        and bool(line_root)
        and os.path.realpath(line_root) == os.path.realpath(root)
    )


#: Seconds of tolerance between a process's start time (boot time plus clock ticks, exposed to
#: clock steps) and the time its ``running.json`` was written just after it started.
START_SLACK = 30.0


def _start_time(pid: int) -> float | None:
    """When ``pid`` started (epoch seconds); None when it cannot be read."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def _epoch(iso: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")  # unreadable: do not refuse on start time alone


def _process_exists(pid: int) -> bool:
    """Whether ``pid`` is a process that is not a zombie."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return pid_alive(pid, hostname(), boot_id())


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

"""One claimed stack's command lines, run in a thread of the daemon (one thread per slot).

Each line from the one after ``progress``: the start is journaled, then ``/bin/sh -c LINE``
runs in a process group of its own (so a stop can signal the whole line), in the stack's
directory, with ``SPICA_ROOT``, ``SPICA_NODE``, ``SPICA_STACK``, ``SPICA_LINE`` and
``SPICA_ATTEMPT`` added to the environment, stdout and stderr to ``logs/NNN.log``. The
``spica`` subcommands on generated lines (``spica qfin record``) find the daemon's own
installation first on ``PATH`` and its configuration in ``SPICA_CONFIG``
(:func:`line_environment`).

On success ``progress`` is rewritten (fsynced) *before* the end of the line is journaled: a
crash between the two leaves that ``stack_run`` row without its end, but a line that
succeeded is never run again. The state moves (completed, failed, released) are journaled
before the rename: a crash between them leaves a stale claim whose recovery converges to the
same state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from spica_core.apps.versions import VersionCache, local_versions
from spica_core.config import ENV_CONFIG, ApplicationConfig
from spica_core.daemon import claims, events
from spica_core.daemon.claims import Claim
from spica_core.daemon.mail import FailureReport, Mailer
from spica_core.daemon.replay import DaemonDb
from spica_core.node.host import boot_id, hostname, iso_utc
from spica_core.node.layout import NodeLayout
from spica_core.node.protocol import ErrorRecord
from spica_core.node.stack_files import (
    RunningLine,
    StackFileError,
    clear_running,
    command_text,
    is_noop,
    read_commands,
    read_stack_progress,
    write_progress,
    write_running,
)

log = logging.getLogger("spica.daemon")

SHELL = b"/bin/sh"
#: Lines of the failed line's log kept in the ``.error`` record and the mail.
TAIL_LINES = 20
MAX_COMMAND_IN_MESSAGE = 1000


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    RELEASED = "released"


@dataclass
class RunnerContext:
    """What the runners of one daemon share."""

    layout: NodeLayout
    node: str
    db: DaemonDb
    mailer: Mailer
    #: Set when the daemon stops: no line starts after it.
    stopping: threading.Event
    #: Added to every line's environment (:func:`line_environment`).
    env: dict[str, str] = field(default_factory=dict)
    #: The release's applications: each claimed stack records the versions it runs with.
    applications: tuple[ApplicationConfig, ...] = ()
    _versions: VersionCache = field(default_factory=VersionCache)
    _versions_lock: threading.Lock = field(default_factory=threading.Lock)

    def unit_versions(self) -> dict[str, str]:
        """Application name -> version of its binary here (runners share one cache, so an
        unchanged binary is not run again for every stack)."""
        if not self.applications:
            return {}
        with self._versions_lock:
            return local_versions(self.applications, self._versions)


def line_environment(config_source: str) -> dict[str, str]:
    """What a line needs to call ``spica`` as this daemon runs it: the directory of this
    installation's ``spica`` first on ``PATH``, and the daemon's configuration file."""
    env: dict[str, str] = {}
    scripts = Path(sys.executable).absolute().parent
    if os.access(scripts / "spica", os.X_OK):
        env["PATH"] = os.pathsep.join(p for p in (str(scripts), os.environ.get("PATH")) if p)
    if Path(config_source).is_file():
        env[ENV_CONFIG] = str(Path(config_source).absolute())
    return env


class StackRunner:
    """Runs one claimed stack to completed, failed, or (on a stop) released."""

    def __init__(self, ctx: RunnerContext, owned: Claim) -> None:
        self.ctx = ctx
        self.owned = owned
        self.stack = owned.stack
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._interrupted = False
        self._progress = 0
        self.outcome: Outcome | None = None

    # ------------------------------------------------------------------- control

    def interrupt(self, sig: int = signal.SIGTERM) -> bool:
        """Signal the running line's process group (the daemon's grace is over); the stack
        is then released, resumable at that line. Whether a line was running."""
        with self._lock:
            self._interrupted = True
            process = self._process
            if process is None or process.returncode is not None:
                return False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            return True

    # ------------------------------------------------------------------- the run

    def run(self) -> Outcome:
        """Never raises: an unexpected error fails the stack rather than strand its claim."""
        try:
            self.outcome = self._run()
        except Exception as exc:
            log.exception("%s: daemon error while running the stack", self.stack)
            self.outcome = self._fail_hard(f"daemon error: {type(exc).__name__}: {exc}")
        return self.outcome

    def _run(self) -> Outcome:
        ctx, stack = self.ctx, self.stack
        try:
            lines = read_commands(ctx.layout, stack)
            self._progress = read_stack_progress(ctx.layout, stack)
        except StackFileError as exc:
            return self._fail(None, None, None, f"stack files: {exc.reason}")
        total = len(lines)
        ctx.db.record(
            events.Claimed(
                stack=stack,
                attempt=self.owned.attempt,
                progress=min(self._progress, total),
                lines=total,
            )
        )
        versions = ctx.unit_versions()
        if versions:
            ctx.db.record(events.UnitVersions(stack=stack, versions=versions))
        log.info(
            "%s: claimed (attempt %d), %s",
            stack,
            self.owned.attempt,
            f"from line {self._progress + 1} of {total}" if self._progress < total else "all done",
        )
        ctx.layout.logs_dir(stack).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **ctx.env,
            "SPICA_ROOT": str(ctx.layout.root),
            "SPICA_NODE": ctx.node,
            "SPICA_STACK": stack,
            "SPICA_ATTEMPT": str(self.owned.attempt),
        }
        for number in range(self._progress + 1, total + 1):
            if ctx.stopping.is_set():
                return self._release()
            line = lines[number - 1]
            if is_noop(line):
                continue
            exit_code = self._run_line(number, line, env)
            if exit_code == 0:
                write_progress(ctx.layout, stack, number)
                self._progress = number
                ctx.db.record(
                    events.LineEnded(
                        stack=stack,
                        line=number,
                        attempt=self.owned.attempt,
                        exit_code=0,
                        progress=number,
                    )
                )
                continue
            ctx.db.record(
                events.LineEnded(
                    stack=stack, line=number, attempt=self.owned.attempt, exit_code=exit_code
                )
            )
            if self._interrupted:
                return self._release()
            command = command_text(line)
            shown = command[:MAX_COMMAND_IN_MESSAGE]
            message = f"Failed on {shown} - Code {exit_code} - Line {number}"
            return self._fail(number, exit_code, command, message)
        if self._progress < total:
            write_progress(ctx.layout, stack, total)  # trailing blank lines or comments
        ctx.db.record(events.Completed(stack=stack, lines=total))
        claims.complete(ctx.layout, self.owned)
        clear_running(ctx.layout, stack)
        log.info("%s: completed", stack)
        return Outcome.COMPLETED

    def _run_line(self, number: int, line: bytes, env: dict[str, str]) -> int:
        """Run one line to its end; its exit code (128 + N when killed by signal N)."""
        ctx, stack = self.ctx, self.stack
        ctx.db.record(
            events.LineStarted(
                stack=stack, line=number, attempt=self.owned.attempt, command=command_text(line)
            )
        )
        env = {**env, "SPICA_LINE": str(number)}
        with open(ctx.layout.log_file(stack, number), "wb") as logfile, self._lock:
            if self._interrupted:
                return 128 + signal.SIGTERM
            try:
                process = subprocess.Popen(
                    [SHELL, b"-c", line],
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    cwd=ctx.layout.stack_dir(stack),
                    env=env,
                    start_new_session=True,  # its own process group, out of our signals
                    close_fds=True,
                )
            except OSError as exc:
                logfile.write(f"spica: cannot start /bin/sh: {exc}\n".encode())
                return 127
            self._process = process
        write_running(
            ctx.layout,
            stack,
            RunningLine(process.pid, number, self.owned.attempt, hostname(), boot_id(), iso_utc()),
        )
        code = process.wait()
        with self._lock:
            self._process = None
        return code if code >= 0 else 128 - code

    # ------------------------------------------------------------------- endings

    def _fail(
        self, line: int | None, exit_code: int | None, command: str | None, message: str
    ) -> Outcome:
        ctx, stack = self.ctx, self.stack
        tail = self._log_tail(line) if line is not None else None
        ctx.db.record(
            events.Failed(
                stack=stack,
                line=line,
                exit_code=exit_code,
                attempt=self.owned.attempt,
                message=message,
                progress=self._progress,
            )
        )
        claims.fail(
            ctx.layout,
            self.owned,
            ErrorRecord(line=line, exit_code=exit_code, message=message, log_tail=tail),
        )
        clear_running(ctx.layout, stack)
        log.warning("%s: failed: %s", stack, message)
        ctx.mailer.submit(
            FailureReport(
                stack=stack,
                node=ctx.node,
                line=line,
                exit_code=exit_code,
                command=command,
                message=message,
                log_tail=tail,
                root=str(ctx.layout.root),
            )
        )
        return Outcome.FAILED

    def _release(self) -> Outcome:
        ctx, stack = self.ctx, self.stack
        ctx.db.record(events.Released(stack=stack, progress=self._progress))
        claims.release(ctx.layout, self.owned)
        clear_running(ctx.layout, stack)
        log.info("%s: released as pending, resumes at line %d", stack, self._progress + 1)
        return Outcome.RELEASED

    def _fail_hard(self, message: str) -> Outcome:
        """Fail after an unexpected error; when even that cannot be written (a full disk),
        at least move the claim away from this live daemon so an operator can act on it."""
        try:
            return self._fail(None, None, None, message)
        except Exception:
            log.exception("%s: cannot record the failure", self.stack)
        running = self.ctx.layout.queue_file(self.stack, claims.R)
        with contextlib.suppress(OSError):
            os.rename(running, self.ctx.layout.queue_file(self.stack, claims.F))
        return Outcome.FAILED

    def _log_tail(self, line: int) -> str | None:
        from spica_core.node.agent import read_tail

        try:
            data, _, _ = read_tail(self.ctx.layout.log_file(self.stack, line), lines=TAIL_LINES)
        except (OSError, ValueError):
            return None
        return data.decode("utf-8", errors="replace")[-4000:]

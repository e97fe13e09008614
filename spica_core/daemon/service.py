"""The daemon's main loop: watch the queue, fill the slots, beat, recover, stop cleanly.

One loop in the main thread does all the deciding; each claimed stack runs in a thread of its
own (:class:`~spica_core.daemon.runner.StackRunner`), the dbspica replay and the mail in one
thread each. The loop wakes on a queue change (inotify), when a runner ends, on a stop, and
at least every ``poll_interval`` seconds.

Each pass: refresh the heartbeat when due; recover stale claims (dead pid, other boot);
while a slot is free, take the pending stacks by priority then age and, for each, either skip
it (its failed check is not due again yet), reject it (its files cannot run), note its failed
check (it stays pending, with a per-stack backoff), or claim it and start its runner. A QFin
unit is claimed only once its partition's QFin lock is taken (it waits while another holds
it, :mod:`spica_core.daemon.qfin_lock`) and gives it back when its run ends.

Stopping (SIGTERM, :meth:`DaemonService.stop`): no new line starts; running lines get
``stop_grace`` seconds to finish, then their process groups are killed; every stack is left
pending at its resume point (never in a state no command can get it out of), the journal
is applied as far as dbspica allows, queued mail is sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from spica_core.backoff import capped_delay
from spica_core.config import NodeConfig, SpicaConfig
from spica_core.daemon import claims, events, qfin_lock
from spica_core.daemon.claims import PendingStack
from spica_core.daemon.journal import Journal
from spica_core.daemon.mail import FailureReport, Mailer
from spica_core.daemon.preflight import ApplicationTable, Preflight
from spica_core.daemon.replay import DaemonDb
from spica_core.daemon.runner import RunnerContext, StackRunner, line_environment
from spica_core.daemon.watch import QueueWatch
from spica_core.errors import ConfigError, SpicaError
from spica_core.names import validate_name
from spica_core.node.heartbeat import write_heartbeat
from spica_core.node.host import iso_utc
from spica_core.node.layout import NodeLayout, resolve_inside, root_problem
from spica_core.node.stack_files import (
    CheckRecord,
    StackFileError,
    clear_check,
    read_check,
    write_check,
)
from spica_core.states import StackState

log = logging.getLogger("spica.daemon")

#: Seconds between a SIGTERM and a SIGKILL to a line once the stop grace is over.
KILL_AFTER = 3.0
#: Seconds the loop sleeps after an unexpected error in a pass, at least.
ERROR_PAUSE = 1.0


class DaemonError(SpicaError):
    """The daemon cannot start on this node (root missing, journal unusable)."""

    exit_code = 2


def local_node(config: SpicaConfig, name: str | None = None) -> NodeConfig:
    """The node this process runs on: ``name`` when given, else the one configured node
    whose host is this host, else the one whose root exists here."""
    if name is not None:
        return config.node(validate_name(name, "node"))
    host = socket.gethostname()
    names = {host, host.split(".")[0], socket.getfqdn()}
    by_host = [n for n in config.nodes if n.host in names]
    if len(by_host) == 1:
        return by_host[0]
    here = [n for n in config.nodes if Path(n.root).is_dir()]
    if len(here) == 1:
        return here[0]
    candidates = ", ".join(n.name for n in (by_host or here)) or "none"
    raise ConfigError(
        f"{config.source}: cannot tell which node this is (candidates: {candidates}); "
        "pass --node NAME"
    )


def journal_path(root: Path, journal: str) -> Path:
    """``[daemon].journal``: absolute, or relative to (and kept inside) the node root."""
    path = Path(journal).expanduser()
    return path if path.is_absolute() else resolve_inside(root, journal)


class DaemonService:
    """The daemon of one node. :meth:`run` blocks until :meth:`stop` (thread/signal-safe)."""

    def __init__(self, config: SpicaConfig, node: NodeConfig, *, use_inotify: bool = True) -> None:
        self.config = config
        self.node = node
        self.settings = config.daemon
        self.root = Path(os.path.abspath(os.path.expanduser(node.root)))
        self.layout = NodeLayout(self.root)
        self.slots = self.settings.slots or node.cpus or os.cpu_count() or 1
        self._use_inotify = use_inotify
        self._stopping = threading.Event()
        self._runners: dict[str, tuple[threading.Thread, StackRunner]] = {}
        self._watch: QueueWatch | None = None
        self.db: DaemonDb | None = None
        self.mailer: Mailer | None = None
        self.preflight: Preflight | None = None
        #: Queue entries left alone, and stacks whose handling failed: reported once each.
        self._skipped: set[tuple[str, str, str]] = set()
        self._failing: dict[tuple[str, str], str] = {}
        self._unrecovered: dict[str, str] = {}
        #: Units waiting for a QFin lock (the holder they wait for), and the dead locks
        #: already reported: each is said once, not at every pass.
        self._qfin_waiting: dict[str, str] = {}
        self._dead_locks: set[str] = set()

    # ------------------------------------------------------------------- control

    def stop(self) -> None:
        """Ask for a clean stop; safe from a signal handler or any thread."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.wake()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop cleanly (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _signo, _frame: self.stop())

    @property
    def running(self) -> list[str]:
        return sorted(self._runners)

    # ------------------------------------------------------------------- the loop

    def run(self) -> int:
        """Serve until :meth:`stop`; 0. Raises DaemonError when it cannot start."""
        try:
            self._start()
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _start(self) -> None:
        if not self.root.is_dir():
            raise DaemonError(f"node {self.node.name}: spica root {self.root} is not a directory")
        why = root_problem(os.path.realpath(self.root))
        if why is not None:  # the configured path is checked; this is where it leads
            raise DaemonError(f"node {self.node.name}: spica root {self.root}: {why}")
        for sub in ("queue", "stacks", "locks"):
            self.layout.resolve(sub).mkdir(exist_ok=True)
        try:
            journal = Journal(journal_path(self.root, self.settings.journal), self.node.name)
        except OSError as exc:
            raise DaemonError(f"node {self.node.name}: journal unusable: {exc}") from None
        self.db = DaemonDb(self.config.db, journal, self.node.name)
        self.db.start()
        self.mailer = Mailer(self.config.smtp)
        self.preflight = Preflight(
            self.root, self.node, self.config.release, ApplicationTable(self.db.engine)
        )
        self._watch = QueueWatch(self.layout.queue_dir(), use_inotify=self._use_inotify)
        self._ctx = RunnerContext(
            self.layout,
            self.node.name,
            self.db,
            self.mailer,
            self._stopping,
            line_environment(self.config.source),
            tuple(self.config.release.applications),
        )
        write_heartbeat(self.root)
        log.info(
            "daemon of node %s on %s: pid %d, %d slot(s), %s, journal %s",
            self.node.name,
            self.root,
            os.getpid(),
            self.slots,
            "inotify" if self._watch.inotify else f"polling every {self.settings.poll_interval} s",
            journal.path,
        )
        self._recover_stale()

    def _loop(self) -> None:
        assert self._watch is not None
        beat_every = self.settings.heartbeat_interval
        next_beat = time.monotonic() + beat_every
        next_recovery = next_beat
        pass_error: str | None = None
        while not self._stopping.is_set():
            due: float | None = None
            try:
                now = time.monotonic()
                if now >= next_beat:
                    write_heartbeat(self.root)
                    next_beat = now + beat_every
                self._reap()
                if now >= next_recovery:
                    self._recover_stale()
                    next_recovery = now + beat_every
                due = self._fill_slots()
                pass_error = None
            except Exception as exc:
                if f"{type(exc).__name__}: {exc}" != pass_error:  # once while it repeats
                    log.exception("daemon pass failed; going on")
                pass_error = f"{type(exc).__name__}: {exc}"
                self._stopping.wait(ERROR_PAUSE)
            timeout = min(self.settings.poll_interval, max(0.0, next_beat - time.monotonic()))
            if due is not None:
                timeout = min(timeout, due)
            if not self._stopping.is_set():
                self._watch.wait(timeout)

    def _reap(self) -> None:
        for stack, (thread, _) in list(self._runners.items()):
            if not thread.is_alive():
                thread.join()
                del self._runners[stack]

    # ------------------------------------------------------------------- claiming

    def _fill_slots(self) -> float | None:
        """Claim pending stacks while a slot is free; seconds until a waiting one is due.

        Each stack is handled on its own: whatever goes wrong with one (its files, an
        unexpected error) is reported once and the others are still looked at.
        """
        if len(self._runners) >= self.slots:
            return None
        assert self.preflight is not None
        self.preflight.new_pass()
        now = time.time()
        due: float | None = None
        scan = claims.scan_pending(self.layout, now)
        self._report_skipped(scan.skipped)
        listed = {(pending.stack, pending.identity) for pending in scan.pending}
        self._failing = {key: why for key, why in self._failing.items() if key in listed}
        names = {stack for stack, _ in listed}
        self._qfin_waiting = {s: k for s, k in self._qfin_waiting.items() if s in names}
        for pending in scan.pending:
            if len(self._runners) >= self.slots or self._stopping.is_set():
                break
            if pending.stack in self._runners:
                continue
            try:
                wait = self._consider(pending, now)
            except Exception as exc:
                key, why = (pending.stack, pending.identity), f"{type(exc).__name__}: {exc}"
                if self._failing.get(key) != why:
                    log.exception(
                        "%s: not claimed: unexpected error; the others go on", pending.stack
                    )
                    self._problem(f"{pending.stack}: not claimed: {why}", pending.stack)
                self._failing[key] = why
                continue
            if wait is not None:
                due = _earliest(due, wait)
        return due

    def _consider(self, pending: PendingStack, now: float) -> float | None:
        """Skip, reject, note a failed check of, or claim one pending stack; seconds until it
        is due again when it waits."""
        assert self.preflight is not None
        if pending.malformed or pending.unsettled:
            if pending.age < claims.SETTLE_GRACE:  # maybe still being written
                return claims.SETTLE_GRACE - pending.age
            if pending.malformed:
                self._reject(pending, f"{pending.stack}.spica is malformed: {pending.malformed}")
                return None
        previous = read_check(self.layout, pending.stack)
        if previous is not None and previous.launch == pending.identity and previous.retry_at > now:
            return previous.retry_at - now
        others = claims.other_queue_files(self.layout, pending.stack, StackState.PENDING)
        if others:
            reason = f"queue drift: {', '.join(others)} exist(s) too; resolve by hand"
            return self._check_failed(pending, reason, previous)
        result = self.preflight.check(pending.stack)
        if result.fatal:
            self._reject(pending, result.reason)
            return None
        if not result.ok:
            return self._check_failed(pending, result.reason, previous)
        unit, why = qfin_lock.read_unit(self.layout, pending.stack)
        if why is not None:
            reason = f"stacks/{pending.stack}/unit.json: {why}"
            return self._check_failed(pending, reason, previous)
        partition = qfin_lock.lock_partition(unit)
        if partition is not None:
            busy = qfin_lock.acquire(self.layout, partition, pending.stack, self._runners)
            if busy is not None:
                return self._qfin_waits(pending, busy)
            self._qfin_waiting.pop(pending.stack, None)
        if not self._claim(pending, previous, partition) and partition is not None:
            qfin_lock.release(self.layout, partition, pending.stack)
        return None

    def _qfin_waits(self, pending: PendingStack, busy: qfin_lock.LockBusy) -> float:
        """A QFin unit whose partition's lock is held stays pending (no check failure, no
        backoff): said once per holder; a dead holder is a problem, reported once, that only
        an operator clears. Seconds until it is looked at again (a run ending here wakes the
        loop sooner)."""
        if self._qfin_waiting.get(pending.stack) != busy.key:
            self._qfin_waiting[pending.stack] = busy.key
            log.info("%s: waits for the QFin lock: %s", pending.stack, busy.message)
        if not busy.alive and busy.key not in self._dead_locks:
            self._dead_locks.add(busy.key)
            message = (
                f"{pending.stack} waits: {busy.message}; after checking partition "
                f"{busy.partition}, clear it with "
                f"'spica unlock --qfin {busy.partition} --node {self.node.name}'"
            )
            log.warning("%s", message)
            self._problem(message, pending.stack)
        return self.settings.poll_interval

    def _report_skipped(self, skipped: list[claims.SkippedEntry]) -> None:
        """Log and file a problem for each queue entry left alone, once while it stays."""
        current = {(entry.name, entry.identity, entry.reason) for entry in skipped}
        for entry in skipped:
            if (entry.name, entry.identity, entry.reason) not in self._skipped:
                log.warning("%s", entry.message)
                self._problem(entry.message)
        self._skipped = current

    def _problem(self, message: str, stack: str | None = None) -> None:
        """A software problem row about this node (through the journal, as every write)."""
        assert self.db is not None
        self.db.record(events.NodeProblem(stack=stack, message=message))

    def _claim(
        self, pending: PendingStack, previous: CheckRecord | None, qfin_partition: str | None
    ) -> bool:
        """Claim and start the runner; whether it was claimed. ``qfin_partition``: the QFin
        lock the unit holds, given back when its run ends."""
        try:
            owned = claims.claim(self.layout, pending)
        except (OSError, StackFileError) as exc:
            log.error("%s: claim failed: %s", pending.stack, exc)
            return False
        if owned is None:
            return False  # another daemon of this root was first
        if previous is not None:
            clear_check(self.layout, pending.stack)
        runner = StackRunner(self._ctx, owned)
        thread = threading.Thread(
            target=self._run_stack,
            args=(runner, qfin_partition),
            name=f"stack {owned.stack}",
            daemon=True,
        )
        self._runners[owned.stack] = (thread, runner)
        thread.start()
        return True

    def _run_stack(self, runner: StackRunner, qfin_partition: str | None) -> None:
        try:
            runner.run()
        finally:
            if qfin_partition is not None:  # every end: completed, failed, released
                try:
                    qfin_lock.release(self.layout, qfin_partition, runner.stack)
                except OSError as exc:  # taken again by this daemon's next QFin there
                    log.error(
                        "%s: QFin lock of %s not released: %s", runner.stack, qfin_partition, exc
                    )
            if self._watch is not None:
                self._watch.wake()

    def _check_failed(
        self, pending: PendingStack, reason: str, previous: CheckRecord | None
    ) -> float:
        """Note a failed check: the stack stays pending, looked at again after a backoff
        doubling at each failure. dbspica and a problem row hear of each new reason once."""
        assert self.db is not None
        same_launch = previous is not None and previous.launch == pending.identity
        failures = previous.failures + 1 if same_launch and previous is not None else 1
        delay = capped_delay(failures, self.settings.check_backoff, self.settings.check_backoff_max)
        new = not same_launch or previous is None or previous.reason != reason
        write_check(
            self.layout,
            pending.stack,
            CheckRecord(reason, failures, iso_utc(), time.time() + delay, pending.identity),
        )
        if new:
            log.warning("%s: check failed, stays pending: %s", pending.stack, reason)
            self.db.record(events.CheckFailed(stack=pending.stack, reason=reason, problem=True))
        return delay

    def _reject(self, pending: PendingStack, reason: str) -> None:
        """pending → failed for a stack that cannot run as it is (its files)."""
        assert self.db is not None and self.mailer is not None
        message = f"rejected: {reason}"
        if not claims.reject(self.layout, pending, message):
            return
        self.db.record(events.Rejected(stack=pending.stack, message=message))
        log.warning("%s: %s", pending.stack, message)
        self.mailer.submit(
            FailureReport(
                pending.stack, self.node.name, None, None, None, message, None, str(self.root)
            )
        )

    # ------------------------------------------------------------------- recovery

    def _recover_stale(self) -> None:
        assert self.db is not None and self.mailer is not None
        for move in claims.recover_moves(self.layout):
            log.warning("%s: %s recovered as %s", move.stack, move.name, move.target.value)
        target = StackState(self.settings.recover)
        for found in claims.find_stale(self.layout):
            if found.stack in self._runners:
                continue
            try:
                done = claims.recover(self.layout, found, target)
            except Exception as exc:  # one stack's trouble never stops the others
                why = f"{found.stack}: stale claim not recovered: {exc}"
                if self._unrecovered.get(found.stack) != why:
                    expected = isinstance(exc, OSError | SpicaError | StackFileError)
                    log.error("%s", why, exc_info=not expected)
                    self._problem(why, found.stack)
                self._unrecovered[found.stack] = why
                continue
            self._unrecovered.pop(found.stack, None)
            if done is None:
                continue
            self.db.record(
                events.Recovered(
                    stack=done.stack,
                    state=done.state.value,
                    line=done.line,
                    message=done.message,
                    attempt=done.attempt,
                    run_line=done.run_line,
                    run_exit_code=done.run_exit_code,
                )
            )
            killed = f" (killed its orphan line, pid {done.killed_pid})" if done.killed_pid else ""
            log.warning("%s%s", done.message, killed)
            if done.state is StackState.FAILED:
                self.mailer.submit(
                    FailureReport(
                        done.stack,
                        self.node.name,
                        done.line,
                        None,
                        None,
                        done.message,
                        None,
                        str(self.root),
                    )
                )

    # ------------------------------------------------------------------- stopping

    def _shutdown(self) -> None:
        self._stopping.set()
        if self._runners:
            log.info(
                "stopping: %d running line(s) get %.0f s to finish",
                len(self._runners),
                self.settings.stop_grace,
            )
        self._join_runners(self.settings.stop_grace)
        for sig, wait in ((signal.SIGTERM, KILL_AFTER), (signal.SIGKILL, 60.0)):
            if not self._runners:
                break
            for stack, (_, runner) in self._runners.items():
                if runner.interrupt(sig):
                    log.warning("%s: grace over, line killed (%s)", stack, sig.name)
            self._join_runners(wait)
        for stack in self._runners:
            log.error("%s: runner did not end; its claim stays with this pid", stack)
        if self.db is not None:
            if not self.db.close(timeout=5.0):
                log.warning("dbspica writes still journaled: they are applied at the next start")
            self.db.journal.close()
        if self.mailer is not None:
            self.mailer.close()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self.db is not None:
            log.info("daemon of node %s stopped", self.node.name)

    def _join_runners(self, timeout: float) -> None:
        """Wait for the runners up to ``timeout``, beating meanwhile (the daemon lives)."""
        deadline = time.monotonic() + timeout
        next_beat = 0.0
        while self._runners and time.monotonic() < deadline:
            if time.monotonic() >= next_beat:
                with contextlib.suppress(OSError):
                    write_heartbeat(self.root)
                next_beat = time.monotonic() + self.settings.heartbeat_interval
            for stack, (thread, _) in list(self._runners.items()):
                thread.join(timeout=0.05)
                if not thread.is_alive():
                    del self._runners[stack]


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)

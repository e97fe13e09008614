"""The replay of the daemon's journal into dbspica: in order, exactly once.

Each write is one typed event (:mod:`spica_core.daemon.events`), journalled with its
``kind`` tag, appended and fsynced before the caller goes on
(:mod:`spica_core.daemon.journal`); what an event does to dbspica is
:mod:`spica_core.daemon.mirror`'s. A replay thread applies the entries to dbspica in seq
order, many per transaction, and advances ``daemon_journal.applied_seq`` in the same
transaction: whatever crashes, outages or concurrent replays happen (the other daemon of the
same root replays the same file), an entry is applied once and none is skipped. While
dbspica does not answer, entries simply wait in the journal: the runner never touches the
database, so an outage needs no special path and never slows a stack down.

The replay serialises on the ``daemon_journal`` row: its first statement updates the row,
which takes the row lock (MariaDB) or the write lock (SQLite) before ``applied_seq`` is read.
An entry dbspica refuses for good (not an outage: a constraint or a bug) is kept in
``<journal>.rejected`` with the reason and skipped, so one bad entry cannot stall the node.

dbspica's position can only go back when dbspica itself does (an older backup restored, the
``daemon_journal`` row reset). Each transaction, and an idle check every
:data:`POSITION_CHECK` seconds, compares it with what the node knows was applied (this
process's position, and the journal's compacted ``base``): behind, the entries still in the
journal are replayed again, the ones compacted away are lost to dbspica, and both are said
loudly, in the log and in a problem row (:data:`JOURNAL_BEHIND`) that reconcile reports.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spica_core.backoff import Backoff
from spica_core.config import DatabaseConfig
from spica_core.daemon.events import MirrorEvent, to_fields
from spica_core.daemon.journal import JOURNAL_BEHIND, Journal
from spica_core.errors import DatabaseUnavailable
from spica_core.node.host import iso_utc

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session


log = logging.getLogger("spica.daemon")

#: Entries applied per transaction at most.
BATCH = 200
#: Seconds between two replay attempts while dbspica does not answer: doubling from the
#: first to the most.
RETRY_BASE = 0.2
RETRY_MAX = 5.0
#: Seconds between two looks at the journal when nothing woke the replay (entries appended
#: by the other daemon of the same root, or left by a dead one).
IDLE_RESCAN = 5.0
#: Seconds the replay lets entries gather after a wake: one transaction for a burst of lines
#: instead of one each, and the runners' threads are not fighting the ORM for the GIL.
COALESCE = 0.05
#: Seconds between two checks, while no entry waits, that dbspica has not gone back.
POSITION_CHECK = 30.0


class _Unavailable(Exception):
    """dbspica did not answer, or answered that it cannot take writes now: retry later."""


class DaemonDb:
    """One daemon's dbspica writer: :meth:`record` journals, a thread applies."""

    def __init__(self, db: DatabaseConfig, journal: Journal, node: str) -> None:
        self.db = db
        self.journal = journal
        self.node = node
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._journal_id = ""
        self._row_ready = ""
        self._applied = 0
        #: The journal's compacted base: entries up to it were applied and are gone.
        self._base = 0
        self._check_due = 0.0
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._flushing = False
        self._thread: threading.Thread | None = None
        self._down_reason: str | None = None

    # ------------------------------------------------------------------- the writes

    def record(self, event: MirrorEvent) -> int:
        """Journal one event (durable on return) and wake the replay; its seq."""
        fields = to_fields(event)
        entry = {"kind": fields.pop("kind"), "node": self.node, "at": iso_utc(), **fields}
        seq = self.journal.append(entry)
        self._wake.set()
        return seq

    # ------------------------------------------------------------------- the replay

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="spica-db-replay", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> bool:
        """Apply what can be applied within ``timeout``, stop the thread; whether all was.
        What is left stays in the journal for the next start."""
        done = self.flush(timeout)
        with self._cond:
            self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, timeout))
        if self._engine is not None:
            self._engine.dispose()
        return done

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every entry this process knows of is applied; whether it was."""
        target = self.journal.last_seq
        self._flushing = True
        self._wake.set()
        try:
            with self._cond:
                return self._cond.wait_for(
                    lambda: self._applied >= target or self._closing, timeout=timeout
                ) and (self._applied >= target)
        finally:
            self._flushing = False

    @property
    def applied_seq(self) -> int:
        return self._applied

    @property
    def unreachable(self) -> str | None:
        """Why dbspica did not answer the last replay, None when it did."""
        return self._down_reason

    def _run(self) -> None:
        delay = 0.0
        retry = Backoff(RETRY_BASE, RETRY_MAX)
        while True:
            if self._wake.wait(timeout=delay or IDLE_RESCAN) and not self._flushing:
                time.sleep(COALESCE)
            self._wake.clear()
            with self._cond:
                if self._closing:
                    return
            try:
                self.replay()
            except _Unavailable as exc:
                delay = retry.failed()
                if self._down_reason is None:
                    log.warning(
                        "dbspica unreachable (%s): writes wait in the journal %s",
                        exc,
                        self.journal.path,
                    )
                self._down_reason = str(exc)
                continue
            except Exception:  # a bug must not kill the replay thread silently
                log.exception("journal replay failed; retrying")
                delay = retry.at_cap()
                continue
            delay = 0.0
            retry.succeeded()
            if self._down_reason is not None:
                log.info("dbspica answers again: journal replayed up to seq %d", self._applied)
                self._down_reason = None

    def replay(self) -> int:
        """Apply every pending journal entry now; the applied seq. Raises _Unavailable."""
        batch = self.journal.read_new()
        if batch.journal_id and batch.journal_id != self._journal_id:
            if self._pending:
                log.warning(
                    "journal %s was replaced: %d unapplied entries of journal %s dropped",
                    self.journal.path,
                    len(self._pending),
                    self._journal_id,
                )
            self._journal_id, self._applied, self._pending = batch.journal_id, 0, []
        self._base = batch.base
        self._pending.extend(batch.entries)
        if not self._pending and self._journal_id and time.monotonic() >= self._check_due:
            self._transaction(lambda _session, applied: applied)  # checks the position
        while self._pending:
            chunk = self._pending[:BATCH]
            applied = self._apply_chunk(chunk)
            with self._cond:
                self._applied = max(self._applied, applied)
                self._pending = [e for e in self._pending if e["seq"] > self._applied]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.journal.compact(self._applied)
        return self._applied

    def _apply_chunk(self, chunk: list[dict[str, Any]]) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return self._transaction(lambda s, applied: _apply_all(s, chunk, applied))
        except _Unavailable:
            raise
        except (SQLAlchemyError, KeyError, ValueError, TypeError) as exc:
            if len(chunk) > 1:  # find the one entry that dbspica refuses
                applied = 0
                for entry in chunk:
                    applied = self._apply_chunk([entry])
                return applied
            entry = chunk[0]
            reason = _describe(exc)
            log.error("journal entry %s refused by dbspica, kept aside: %s", entry["seq"], reason)
            self.journal.reject(entry, reason)
            return self._transaction(lambda s, applied: max(applied, entry["seq"]))

    def _transaction(self, body: Callable[[Session, int], int]) -> int:
        """Run ``body(session, applied_seq)`` in one transaction holding the journal row;
        ``applied_seq`` becomes what it returns, in the same commit."""
        from sqlalchemy import select, update
        from sqlalchemy.orm import Session

        from spica_core.db.models import DaemonJournal
        from spica_core.db.types import affected_rows, utcnow

        engine = self._get_engine()
        row = DaemonJournal.journal_id == self._journal_id
        try:
            self._ensure_row(engine)
            with Session(engine) as session, session.begin():
                # A write first: it takes the row (or database) lock before the read below.
                touched = session.execute(
                    update(DaemonJournal).where(row).values(updated_at=utcnow())
                )
                if affected_rows(touched) != 1:
                    self._row_ready = ""
                    raise _Unavailable("the daemon_journal row disappeared; creating it again")
                applied = session.scalar(select(DaemonJournal.applied_seq).where(row)) or 0
                self._check_due = time.monotonic() + POSITION_CHECK
                known = max(self._applied, self._base)
                if applied < known:
                    done = self._behind(session, applied, known)
                else:
                    done = body(session, applied)
                if done != applied:
                    session.execute(update(DaemonJournal).where(row).values(applied_seq=done))
                return done
        except _Unavailable:
            raise
        except Exception as exc:
            if transient(exc):
                raise _Unavailable(_describe(exc)) from None
            raise
        finally:
            if engine.dialect.name == "sqlite":
                # A new connection each time: a dbspica file moved or replaced is noticed.
                engine.dispose()

    def _behind(self, session: Session, applied: int, known: int) -> int:
        """dbspica went back to ``applied`` although the node knows ``known`` was applied:
        say so loudly (log, problem row) and replay again what the journal still holds;
        the new position (the entries compacted away cannot come back)."""
        from spica_core.db.models import Problem

        position = max(applied, self._base)
        message = (
            f"{JOURNAL_BEHIND.format(node=self.node)}: dbspica holds its writes up to seq "
            f"{applied}, the node had them applied up to {known} (dbspica restored from an "
            "older backup?)."
        )
        if self._base > applied:
            message += (
                f" Writes {applied + 1}-{self._base} were compacted away on the node and are "
                "lost to dbspica: run spica reconcile for the stacks it lacks."
            )
        if known > position:
            message += f" Writes {position + 1}-{known} are replayed again from the journal."
        log.error("%s", message)
        session.add(Problem(kind="software", node=self.node, message=message))
        self.journal.rewind()
        with self._cond:
            self._applied, self._pending = position, []
        self._wake.set()
        return position

    def _ensure_row(self, engine: Engine) -> None:
        """Create this journal's ``daemon_journal`` row once (the other replay may race)."""
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError
        from sqlalchemy.orm import Session

        from spica_core.db.models import DaemonJournal

        if self._row_ready == self._journal_id:
            return
        try:
            with Session(engine) as session, session.begin():
                found = session.scalar(
                    select(DaemonJournal.journal_id).where(
                        DaemonJournal.journal_id == self._journal_id
                    )
                )
                if found is None:
                    session.add(
                        DaemonJournal(journal_id=self._journal_id, node=self.node, applied_seq=0)
                    )
        except IntegrityError:
            pass  # created by the other daemon of this root meanwhile
        self._row_ready = self._journal_id

    def _get_engine(self) -> Engine:
        from spica_core.db.engine import make_engine, sqlite_path

        with self._engine_lock:  # the replay and the preflight's reads share it
            if self._engine is None:
                try:
                    self._engine = make_engine(self.db)
                except DatabaseUnavailable as exc:
                    raise _Unavailable(exc.reason) from None
        path = sqlite_path(self._engine.url)
        if path is not None and not path.exists():
            # sqlite3 would quietly create an empty database there.
            raise _Unavailable(f"no dbspica file at {path}")
        return self._engine

    def engine(self) -> Engine:
        """dbspica's engine, shared by the replay and the preflight's reads; _Unavailable
        when it cannot be made (or its SQLite file is gone)."""
        return self._get_engine()


# --------------------------------------------------------------------------- applying


def _apply_all(session: Session, entries: list[dict[str, Any]], applied: int) -> int:
    """Mirror ``entries`` after ``applied`` into dbspica, in seq order; the last seq."""
    from spica_core.daemon import mirror

    for entry in entries:
        seq = entry["seq"]
        if seq <= applied:
            continue
        mirror.apply(session, entry)
        applied = seq
    return applied


def transient(exc: BaseException) -> bool:
    """An outage (or a schema not yet upgraded): the same write will succeed later."""
    from spica_core.db.engine import is_unavailable

    return isinstance(exc, DatabaseUnavailable | OSError | _Unavailable) or is_unavailable(exc)


def _describe(exc: BaseException) -> str:
    from spica_core.db.engine import describe_db_error

    return " ".join(describe_db_error(exc).split())[:300]

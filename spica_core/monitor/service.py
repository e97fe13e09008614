"""The monitor process: poll every node each interval, record, mail, stamp the heartbeat.

Once per transition, whatever the number of monitors. Only the monitor holding the lease
(``monitor_lease``, taken and renewed before each poll by a conditional update) polls; the
others stand by, opening no SSH connection, and take the lease when it expires (its holder
died) or is released (its holder stopped). And should two ever poll at once (a holder paused
past its lease), a transition is still the conditional update of ``node.status`` that
:class:`~spica_core.liveness.LivenessRecorder` makes (``WHERE status = <the status read>``):
only the monitor whose update changed the row gets the change back, and only a change gets a
problem row and a mail.

dbspica work runs in a thread, off the loop where the SSH connections live, so a lock wait
never holds up a poll or a keepalive. A dbspica outage is logged and polling goes on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, or_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.config import SpicaConfig
from spica_core.daemon.mail import Mailer
from spica_core.db.models import Monitor as MonitorRow
from spica_core.db.models import MonitorLease
from spica_core.db.types import utcnow
from spica_core.errors import SpicaError
from spica_core.executor.agents import AgentExecutor
from spica_core.liveness import LivenessChange, LivenessRecorder, recorded_last_seen
from spica_core.monitor.figures import (
    LEASE_ID,
    TAKEOVER_POLLS,
    MonitorIdentity,
    write_figures,
)
from spica_core.node_pool import NodePool

log = logging.getLogger("spica.monitor")

#: The monitor checks the release's application binaries on the answering nodes at its
#: first poll and then every this many polls (every 2 min at the default 2 s interval):
#: what it finds goes to ``node_application``, which the console's nodes panel marks. The
#: agents cache checksums and versions until a binary changes, so a check is one round trip.
VERSIONS_EVERY = 60


@dataclass(frozen=True)
class LivenessMail:
    """The operators' mail for one liveness transition (a node down, or back to life)."""

    node: str
    host: str
    message: str
    down: bool
    at: datetime
    cluster: str
    last_error: str | None = None

    @property
    def subject(self) -> str:
        return f"[SPICA] {self.cluster}: {self.message}"

    @property
    def label(self) -> str:
        return self.node

    def headers(self) -> dict[str, str]:
        event = "node-down" if self.down else "back-to-life"
        return {"X-Spica-Node": self.node, "X-Spica-Event": event}

    def body(self) -> str:
        lines = [
            self.message,
            "",
            f"Node:    {self.node} ({self.host})",
            f"Cluster: {self.cluster}",
            f"At:      {self.at.isoformat(timespec='seconds')}",
        ]
        if self.down and self.last_error:
            lines += [f"Error:   {self.last_error}"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PollReport:
    """One poll: what the nodes said, the transitions this monitor recorded, and the dbspica
    failure that kept it from recording (None when all was written)."""

    cluster: ClusterSnapshot
    changes: list[LivenessChange] = field(default_factory=list)
    db_error: str | None = None


class Monitor:
    """``spica watch``: one NodePool, one LivenessRecorder, one mail thread, one monitor row.

    :meth:`run` polls (while it holds the lease) until :meth:`stop` (safe from a signal
    handler); each poll ends before the monitor stops, then the SSH connections close, the
    row is marked stopped and the lease released.
    """

    def __init__(
        self,
        config: SpicaConfig,
        engine: Engine,
        *,
        interval: float | None = None,
        identity: MonitorIdentity | None = None,
        mailer: Mailer | None = None,
        pool: NodePool | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.interval = interval or config.monitor_interval
        self.identity = identity or MonitorIdentity.here()
        self.mailer = mailer if mailer is not None else Mailer(config.smtp)
        self.pool = pool if pool is not None else NodePool(config)
        self.executor = AgentExecutor(self.pool)
        self.recorder = LivenessRecorder(engine)
        #: Seconds a lease lasts unrenewed: a silent holder is replaced only after the
        #: consoles stopped taking it as running, and never within one slow poll.
        self.lease_seconds = (
            TAKEOVER_POLLS * self.interval + config.ssh.connect_timeout + config.ssh.call_timeout
        )
        self.leading: bool | None = None
        self.polls = 0
        #: Polls between two checks of the application binaries.
        self.versions_every = VERSIONS_EVERY
        self._row_id: int | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # -- the one call that polls the nodes

    async def poll_nodes(self) -> ClusterSnapshot:
        """Every node at once: the cluster's snapshot as its nodes answer it now."""
        return await self.executor.snapshot()

    # -- life cycle

    def stop(self) -> None:
        """Ask for a clean stop after the poll under way; safe from a signal handler."""
        self._stopping = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self, *, once: bool = False, handle_signals: bool = False) -> int:
        """Poll until stopped (or once); returns the exit code (0: stopped cleanly).

        Registering the monitor row is the first dbspica write: when dbspica does not
        answer then, the error is raised (nothing was started)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stopping:
            self._stop.set()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.stop)
        try:
            await asyncio.to_thread(self._register)
            self.pool.remember_last_seen(await asyncio.to_thread(recorded_last_seen, self.engine))
            log.info(
                "monitor %s watching %d node(s) of %s every %.1f s",
                self.identity.label,
                len(self.pool.links),
                self.config.cluster,
                self.interval,
            )
            while True:
                if await self._take_lease():
                    await self.poll_once()
                if once or self._stop.is_set():
                    break
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self.interval)
                except TimeoutError:
                    continue
                break
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(sig)
            await self.close()
        return 0

    async def poll_once(self) -> PollReport:
        """Poll, record (transitions, problems, figures, heartbeat), then mail each change."""
        cluster = await self.poll_nodes()
        report = await asyncio.to_thread(self._record, cluster)
        if self.polls % self.versions_every == 0 and report.db_error is None:
            await self.check_binaries(cluster)
        self.polls += 1
        for change in report.changes:
            log.info("%s: %s -> %s", change.node, change.before, change.after)
            if change.message is None:
                continue
            snap = cluster.node(change.node)
            self.mailer.submit(
                LivenessMail(
                    node=change.node,
                    host=snap.host,
                    message=change.message,
                    down=not snap.liveness.reachable,
                    at=snap.polled_at or cluster.taken_at,
                    cluster=self.config.cluster,
                    last_error=snap.last_error,
                )
            )
        return report

    async def check_binaries(self, cluster: ClusterSnapshot) -> None:
        """What each answering node has of the release's applications, into dbspica; a
        failure is logged and the polls go on."""
        from spica_core.apps.survey import check_applications

        nodes = [n.name for n in cluster.nodes if n.liveness.reachable]
        if not self.config.release.applications or not nodes:
            return
        try:
            result = await check_applications(self.executor, self.config, self.engine, nodes)
        except SQLAlchemyError as exc:
            log.warning("application binaries not recorded: %s", _describe(exc))
            return
        except SpicaError as exc:  # [[release.applications]] unusable: said, polls go on
            log.warning("application binaries not checked: %s", exc)
            return
        for reason in result.drift:
            log.warning("binary drift: %s", reason)

    async def _take_lease(self) -> bool:
        """Take or renew the lease; False (standing by) while another monitor holds it, or
        when dbspica does not answer (nothing could be recorded)."""
        try:
            leading = await asyncio.to_thread(self._hold_lease)
        except SQLAlchemyError as exc:
            log.warning("lease not renewed, no poll: %s", _describe(exc))
            leading = False
        if leading and self.leading is not True:
            log.info("monitor %s holds the lease: polling the nodes", self.identity.label)
        elif not leading and self.leading is not False:
            log.info("another monitor polls the cluster: %s stands by", self.identity.label)
        self.leading = leading
        return leading

    async def close(self) -> None:
        """Close the SSH connections, send the queued mail, mark the row stopped."""
        try:
            await self.pool.close()
        finally:
            await asyncio.to_thread(self.mailer.close)
            if self._row_id is not None:
                try:
                    await asyncio.to_thread(self._mark_stopped)
                except SQLAlchemyError as exc:
                    log.warning("monitor row not marked stopped: %s", _describe(exc))
            log.info("monitor %s stopped after %d poll(s)", self.identity.label, self.polls)

    # -- dbspica (each in a thread)

    def _register(self) -> None:
        with Session(self.engine) as session, session.begin():
            row = MonitorRow(
                host=self.identity.host,
                pid=self.identity.pid,
                interval=self.interval,
                polls=0,
            )
            session.add(row)
            session.flush()
            self._row_id = row.id

    def _record(self, cluster: ClusterSnapshot) -> PollReport:
        changes: list[LivenessChange] = []
        try:
            changes = self.recorder.record(cluster)
            self._write(cluster)
        except SQLAlchemyError as exc:
            text = _describe(exc)
            log.warning("poll not recorded in dbspica: %s", text)
            return PollReport(cluster, changes, text)
        return PollReport(cluster, changes)

    def _write(self, cluster: ClusterSnapshot) -> None:
        """Figures and heartbeat in one transaction; a node's first row inserted by two
        monitors at once makes one of them retry (it then updates the other's row)."""
        for attempt in (1, 2):
            try:
                with Session(self.engine) as session, session.begin():
                    write_figures(session, cluster, self.identity)
                    session.execute(
                        update(MonitorRow)
                        .where(MonitorRow.id == self._row_id)
                        .values(heartbeat_at=utcnow(), polls=MonitorRow.polls + 1)
                    )
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def _hold_lease(self) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=self.lease_seconds)
        try:
            with Session(self.engine) as session, session.begin():
                taken: CursorResult[Any] = cast(
                    "CursorResult[Any]",
                    session.execute(
                        update(MonitorLease)
                        .where(
                            MonitorLease.id == LEASE_ID,
                            or_(
                                MonitorLease.monitor_id == self._row_id,
                                MonitorLease.expires_at < now,
                            ),
                        )
                        .values(monitor_id=self._row_id, expires_at=until)
                    ),
                )
                if taken.rowcount == 1:
                    return True
                if session.get(MonitorLease, LEASE_ID) is not None:
                    return False
                assert self._row_id is not None
                session.add(MonitorLease(id=LEASE_ID, monitor_id=self._row_id, expires_at=until))
        except IntegrityError:  # another monitor created the row first: it holds the lease
            return False
        return True

    def _mark_stopped(self) -> None:
        """Stopped, and the lease released: a standing-by monitor takes over at once."""
        now = utcnow()
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(MonitorRow).where(MonitorRow.id == self._row_id).values(stopped_at=now)
            )
            session.execute(
                update(MonitorLease)
                .where(MonitorLease.id == LEASE_ID, MonitorLease.monitor_id == self._row_id)
                .values(expires_at=now)
            )


def _describe(exc: BaseException) -> str:
    from spica_core.db.engine import describe_db_error

    return describe_db_error(exc)

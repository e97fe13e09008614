"""The monitor's figures in dbspica: written by ``spica watch``, read back by consoles.

A monitor registers a ``monitor`` row. The one holding the lease (``monitor_lease``) polls
and stamps its ``heartbeat_at`` after every poll, in the same transaction as the figures of
that poll (``node_figures``, one row per node, overwritten). A reader therefore knows
exactly how old the figures are: the age of the lease holder's heartbeat. Two rules follow
from it, both here so that every face applies the same:

* the figures are *fresh* while the heartbeat is at most :data:`STALE_POLLS` intervals old
  (plus a second of slack); older, they are shown as stale, never as fresh;
* a monitor *runs* while it has not stopped cleanly and its heartbeat is at most
  :data:`TAKEOVER_POLLS` intervals old; when none runs, a console polls the nodes itself.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import (
    ClusterSnapshot,
    Liveness,
    NodeSnapshot,
    PartitionStatus,
    QueueEntry,
)
from spica_core.config import SpicaConfig
from spica_core.db.models import Monitor, MonitorLease, NodeFigures
from spica_core.node.protocol import ClaimSeen, QfinLock
from spica_core.states import StackState

#: Figures older than this many monitor intervals (plus :data:`SLACK` seconds) are stale.
STALE_POLLS = 2
#: A monitor silent for this many intervals no longer counts as running.
TAKEOVER_POLLS = 5
#: Seconds a poll itself may take before its figures count as late.
SLACK = 1.0
#: The ``monitor_lease`` row's id (there is only one).
LEASE_ID = 1


@dataclass(frozen=True)
class MonitorIdentity:
    """Who wrote the figures: the host and pid of the ``spica watch`` process."""

    host: str
    pid: int

    @classmethod
    def here(cls) -> MonitorIdentity:
        return cls(socket.gethostname(), os.getpid())

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"


@dataclass(frozen=True)
class MonitorStatus:
    """A monitor as its ``monitor`` row says: identity, cadence, last poll, clean stop."""

    identity: MonitorIdentity
    interval: float
    heartbeat_at: datetime
    stopped_at: datetime | None = None

    def age(self, now: datetime) -> float:
        """Seconds since the monitor's last poll ended."""
        return max(0.0, (now - self.heartbeat_at).total_seconds())

    def fresh(self, now: datetime) -> bool:
        return self.stopped_at is None and self.age(now) <= STALE_POLLS * self.interval + SLACK

    def running(self, now: datetime) -> bool:
        return self.stopped_at is None and self.age(now) <= TAKEOVER_POLLS * self.interval + SLACK


@dataclass(frozen=True)
class MonitorView:
    """What a console shows when a monitor runs: its status and the cluster of its figures."""

    monitor: MonitorStatus
    cluster: ClusterSnapshot


def leading_monitor(session: Session) -> MonitorStatus | None:
    """The monitor holding (or that last held) the lease; None when none ever polled."""
    lease = session.get(MonitorLease, LEASE_ID)
    row = None if lease is None else session.get(Monitor, lease.monitor_id)
    if row is None:
        return None
    return MonitorStatus(
        MonitorIdentity(row.host, row.pid), row.interval, row.heartbeat_at, row.stopped_at
    )


def read_monitor_view(engine: Engine, config: SpicaConfig, now: datetime) -> MonitorView | None:
    """The running monitor and its figures of ``config``'s nodes; None when none runs (the
    caller then polls the nodes itself). Raises on dbspica errors."""
    with Session(engine) as session:
        monitor = leading_monitor(session)
        if monitor is None or not monitor.running(now):
            return None
        rows = {r.node: r for r in session.scalars(select(NodeFigures))}
    nodes = tuple(_node_snapshot(n.name, n.host, n.port, rows.get(n.name)) for n in config.nodes)
    return MonitorView(monitor, ClusterSnapshot(taken_at=monitor.heartbeat_at, nodes=nodes))


def write_figures(session: Session, cluster: ClusterSnapshot, identity: MonitorIdentity) -> None:
    """Overwrite each polled node's figures with ``cluster``'s (one row per node)."""
    polled = [n for n in cluster.nodes if n.liveness is not Liveness.UNKNOWN]
    rows = {
        r.node: r
        for r in session.scalars(
            select(NodeFigures).where(NodeFigures.node.in_([n.name for n in polled]))
        )
    }
    for snap in polled:
        row = rows.get(snap.name)
        if row is None:
            row = NodeFigures(node=snap.name)
            session.add(row)
        shown = snap.to_json()  # the one JSON shape of partitions and running stacks
        row.liveness = snap.liveness.value
        row.polled_at = snap.polled_at or cluster.taken_at
        row.last_seen = snap.last_seen
        row.last_error = snap.last_error
        row.load = list(snap.load) if snap.load else None
        row.heartbeat_age = snap.heartbeat_age
        row.heartbeat_pid = snap.heartbeat_pid
        row.agent_version = snap.agent_version
        row.counts = snap.queue_counts()
        row.partitions = _with_locks(shown["partitions"], snap.qfin_locks)
        row.running = shown["running"]
        row.monitor_host, row.monitor_pid = identity.host, identity.pid


def _node_snapshot(name: str, host: str, port: int, row: NodeFigures | None) -> NodeSnapshot:
    if row is None:
        return NodeSnapshot(name=name, host=host, port=port)
    return NodeSnapshot(
        name=name,
        host=host,
        port=port,
        liveness=Liveness(row.liveness),
        last_seen=row.last_seen,
        last_error=row.last_error,
        polled_at=row.polled_at,
        partitions=tuple(_partition(p) for p in row.partitions or ()),
        queue=tuple(_running(r) for r in row.running or ()),
        counts=dict(row.counts) if row.counts is not None else None,
        heartbeat_age=row.heartbeat_age,
        heartbeat_pid=row.heartbeat_pid,
        load=(row.load[0], row.load[1], row.load[2]) if row.load else None,
        agent_version=row.agent_version,
        qfin_locks=tuple(
            msgspec.convert(p["qfin_lock"], QfinLock)
            for p in row.partitions or ()
            if p.get("qfin_lock") is not None
        ),
    )


def _with_locks(
    partitions: list[dict[str, Any]], locks: tuple[QfinLock, ...]
) -> list[dict[str, Any]]:
    """Each partition's figures with its QFin lock, if it has one (``qfin_lock``: the lock as
    the agent read it), so the console and ``spica nodes`` show a dead holder's lock."""
    by_partition = {lock.partition: msgspec.to_builtins(lock) for lock in locks}
    return [
        {**p, "qfin_lock": by_partition[p["name"]]} if p["name"] in by_partition else p
        for p in partitions
    ]


def _partition(raw: dict[str, Any]) -> PartitionStatus:
    return PartitionStatus(
        name=str(raw["name"]),
        total_bytes=int(raw["total_bytes"]),
        free_bytes=int(raw["free_bytes"]),
        used_bytes=int(raw["used_bytes"]),
        reserved_bytes=int(raw.get("reserved_bytes") or 0),
        virtual=bool(raw.get("virtual")),
    )


def _running(raw: dict[str, Any]) -> QueueEntry:
    """A running entry as :meth:`NodeSnapshot.to_json` wrote it (a row written before the
    whole claim was kept has none)."""
    claim = raw.get("claim")
    return QueueEntry(
        stack=str(raw["stack"]),
        state=StackState.RUNNING,
        mtime=None,
        claim=None if claim is None else msgspec.convert(claim, ClaimSeen),
        progress=raw.get("progress"),
        lines=raw.get("lines"),
    )

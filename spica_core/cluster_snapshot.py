"""What the faces see of the cluster: typed, immutable snapshots built from agent answers.

A snapshot is never silently fresh: every node carries the time of its last good answer and,
when the last poll failed, the error; the console shows stale data as stale from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

from spica_core.node.protocol import QfinLock, QueueEntry
from spica_core.states import StackState

__all__ = ["ClusterSnapshot", "Liveness", "NodeSnapshot", "PartitionStatus", "QueueEntry"]


class Liveness(StrEnum):
    UNKNOWN = "unknown"  # never polled yet
    UP = "up"  # the agent answers
    AGENT_MISSING = "agent-missing"  # SSH works, spica is not installed: df/loadavg only
    DOWN = "down"  # no SSH connection

    @property
    def reachable(self) -> bool:
        return self in (Liveness.UP, Liveness.AGENT_MISSING)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class PartitionStatus:
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    reserved_bytes: int = 0
    virtual: bool = False

    @property
    def virtual_free_bytes(self) -> int:
        """The seed's DataTransfer figure: free space left once the reserve is kept."""
        return max(0, self.free_bytes - self.reserved_bytes)

    @property
    def used_fraction(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "used_bytes": self.used_bytes,
            "reserved_bytes": self.reserved_bytes,
            "virtual_free_bytes": self.virtual_free_bytes,
            "virtual": self.virtual,
        }


QUEUE_STATES = (StackState.PENDING, StackState.RUNNING, StackState.COMPLETED, StackState.FAILED)


@dataclass(frozen=True)
class NodeSnapshot:
    name: str
    host: str
    port: int
    liveness: Liveness = Liveness.UNKNOWN
    #: Time of the last good answer (None: never); data below is as of then.
    last_seen: datetime | None = None
    #: Why the last poll failed (None when it succeeded).
    last_error: str | None = None
    polled_at: datetime | None = None
    partitions: tuple[PartitionStatus, ...] = ()
    #: Queue entries of the polled states (pending, running, failed by default), as the
    #: node's agent sent them.
    queue: tuple[QueueEntry, ...] = ()
    #: Queue files per state as counted by the agent (all states, completed included).
    counts: dict[str, int] | None = None
    heartbeat_age: float | None = None
    heartbeat_pid: int | None = None
    load: tuple[float, float, float] | None = None
    agent_version: str | None = None
    boot_id: str | None = None
    #: Set when the last poll was refused for a security reason (the host key does not match
    #: known_hosts): not an outage but a possible impostor, filed as a ``security`` problem.
    security: str | None = None
    #: The QFin locks of its partitions: a dead holder's stays until ``unlock --qfin``.
    qfin_locks: tuple[QfinLock, ...] = ()

    @property
    def stale(self) -> bool:
        """True when what this snapshot shows is older than its last poll."""
        return self.last_error is not None or self.liveness is not Liveness.UP

    def queue_counts(self) -> dict[str, int]:
        if self.counts is not None:
            return {s.value: int(self.counts.get(s.value, 0)) for s in QUEUE_STATES}
        counts = {s.value: 0 for s in QUEUE_STATES}
        for entry in self.queue:
            counts[entry.state.value] += 1
        return counts

    def running(self) -> list[QueueEntry]:
        return [e for e in self.queue if e.state is StackState.RUNNING]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "status": self.liveness.value,
            "last_seen": _iso(self.last_seen),
            "last_error": self.last_error,
            "polled_at": _iso(self.polled_at),
            "load": list(self.load) if self.load else None,
            "heartbeat_age": self.heartbeat_age,
            "heartbeat_pid": self.heartbeat_pid,
            "agent_version": self.agent_version,
            "partitions": [p.to_json() for p in self.partitions],
            "queue_counts": self.queue_counts(),
            "running": [
                {
                    "stack": e.stack,
                    "progress": e.progress,
                    "lines": e.lines,
                    "pid": e.claim.pid if e.claim else None,
                    "alive": e.claim.alive if e.claim else None,
                    # The whole claim, so that a reader of the monitor's figures gets the
                    # entry back as the agent sent it (spica_core.monitor.figures).
                    "claim": msgspec.to_builtins(e.claim) if e.claim else None,
                }
                for e in self.running()
            ],
            "qfin_locks": [
                {
                    "partition": lock.partition,
                    "alive": lock.alive,
                    "pid": lock.holder.pid if lock.holder else None,
                    "host": lock.holder.host if lock.holder else None,
                    "stack": lock.holder.stack if lock.holder else None,
                    "malformed": lock.malformed,
                }
                for lock in self.qfin_locks
            ],
        }


@dataclass(frozen=True)
class ClusterSnapshot:
    taken_at: datetime
    nodes: tuple[NodeSnapshot, ...] = field(default_factory=tuple)

    def node(self, name: str) -> NodeSnapshot:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def unreachable(self) -> list[str]:
        return [n.name for n in self.nodes if not n.liveness.reachable]

    def to_json(self) -> dict[str, Any]:
        return {"taken_at": _iso(self.taken_at), "nodes": [n.to_json() for n in self.nodes]}

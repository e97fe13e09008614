"""Node liveness in dbspica: ``node.status`` and the hardware problem rows of the seed.

Written once per transition, not per poll: the update is conditional on the status last
read, so two consoles watching the same cluster record a transition once between them.
``last_seen`` and the disks are refreshed at most once a minute per node.

A node refused because its host key does not match known_hosts is no outage but a possible
impostor: it is filed as a ``security`` problem (once while one is open for the node), not
as "Unable to contact".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import ClusterSnapshot, Liveness, NodeSnapshot
from spica_core.db.keyed import through_key
from spica_core.db.models import Node, NodeDisk, Problem
from spica_core.db.types import affected_rows, utcnow

log = logging.getLogger(__name__)

DOWN_MESSAGE = "Unable to contact {node} via ssh"
BACK_MESSAGE = "{node} is back to life"
SECURITY_MESSAGE = "Security: {node} refused: {reason}"
#: Problem kinds: the seed's two, and host-key mismatches.
PROBLEM_KINDS = ("software", "hardware", "security")


@dataclass(frozen=True)
class LivenessChange:
    node: str
    before: str
    after: str
    message: str | None


class LivenessRecorder:
    """Mirrors a NodePool's snapshots into dbspica. Not thread-safe: one caller at a time."""

    def __init__(self, engine: Engine, touch_interval: float = 60.0) -> None:
        self.engine = engine
        self.touch_interval = touch_interval
        self._status: dict[str, str] = {}
        self._touched: dict[str, float] = {}

    def record(self, snapshot: ClusterSnapshot) -> list[LivenessChange]:
        """Persist transitions (and, throttled, last_seen and disks). Raises on db errors."""
        changes: list[LivenessChange] = []
        polled = [n for n in snapshot.nodes if n.liveness is not Liveness.UNKNOWN]
        with Session(self.engine) as session, session.begin():
            rows = {
                n.name: n
                for n in session.scalars(
                    select(Node).where(Node.name.in_([p.name for p in polled]))
                )
            }
            for snap in polled:
                row = rows.get(snap.name)
                if row is None:
                    row = Node(
                        name=snap.name, host=snap.host, port=snap.port, root="", status="unknown"
                    )
                    session.add(row)
                    session.flush()
                before = self._status.get(snap.name, row.status)
                if snap.security:
                    self._file_security(session, snap)
                change = self._transition(session, snap, before)
                if change is not None:
                    changes.append(change)
                    self._touch(session, row, snap)
                elif snap.liveness.reachable and self._due(snap.name):
                    self._touch(session, row, snap)
        for change in changes:
            self._status[change.node] = change.after
        for snap in polled:
            self._status.setdefault(snap.name, snap.liveness.value)
        return changes

    def _transition(
        self, session: Session, snap: NodeSnapshot, before: str
    ) -> LivenessChange | None:
        after = snap.liveness.value
        if after == before:
            return None
        result = session.execute(
            through_key(update(Node), "name")
            .where(Node.name == snap.name, Node.status == before)
            .values(
                status=after,
                last_error=snap.last_error,
                **({"last_seen": snap.last_seen} if snap.last_seen else {}),
            )
        )
        if affected_rows(result) != 1:  # another console recorded it first
            self._status[snap.name] = after
            return None
        was_up = before in (Liveness.UP.value, Liveness.AGENT_MISSING.value)
        message = None
        if not snap.liveness.reachable and before != Liveness.DOWN.value:
            # A host-key mismatch is filed as a security problem instead.
            message = None if snap.security else DOWN_MESSAGE.format(node=snap.name)
        elif snap.liveness.reachable and not was_up and before != Liveness.UNKNOWN.value:
            message = BACK_MESSAGE.format(node=snap.name)
        if message:
            session.add(
                Problem(
                    kind="hardware",
                    node=snap.name,
                    message=message,
                    created_at=snap.polled_at or utcnow(),
                )
            )
        return LivenessChange(snap.name, before, after, message)

    def _file_security(self, session: Session, snap: NodeSnapshot) -> None:
        """One open ``security`` problem per node: none added while one is unresolved."""
        open_ = session.scalar(
            select(Problem.id)
            .where(Problem.kind == "security", Problem.node == snap.name)
            .where(Problem.resolved.is_(False))
            .limit(1)
        )
        if open_ is None:
            session.add(
                Problem(
                    kind="security",
                    node=snap.name,
                    message=SECURITY_MESSAGE.format(node=snap.name, reason=snap.security),
                    created_at=snap.polled_at or utcnow(),
                )
            )

    def _due(self, name: str) -> bool:
        return time.monotonic() - self._touched.get(name, 0.0) >= self.touch_interval

    def _touch(self, session: Session, row: Node, snap: NodeSnapshot) -> None:
        """last_seen, last_error and the disks, as of this snapshot."""
        self._touched[snap.name] = time.monotonic()
        if snap.last_seen:
            row.last_seen = snap.last_seen
        row.last_error = snap.last_error
        disks = {d.partition: d for d in row.disks}
        now = utcnow()
        for p in snap.partitions:
            disk = disks.get(p.name)
            if disk is None:
                disk = NodeDisk(partition=p.name, reserved_bytes=p.reserved_bytes)
                row.disks.append(disk)
            disk.total_bytes, disk.free_bytes, disk.updated_at = p.total_bytes, p.free_bytes, now


def recorded_last_seen(engine: Engine) -> dict[str, datetime]:
    """dbspica's ``last_seen`` of every node that has one: what a fresh process knows of
    when a node that is down now last answered."""
    with Session(engine) as session:
        rows = session.execute(select(Node.name, Node.last_seen).where(Node.last_seen.isnot(None)))
        return {name: seen for name, seen in rows if seen is not None}


def record_quietly(recorder: LivenessRecorder, snapshot: ClusterSnapshot) -> str | None:
    """Record, turning a database failure into a message (the live view must go on)."""
    try:
        recorder.record(snapshot)
    except SQLAlchemyError as exc:
        from spica_core.db.engine import describe_db_error

        log.warning("liveness not recorded: %s", describe_db_error(exc))
        return describe_db_error(exc)
    return None

"""The QFin lock of a raid partition, as the daemon takes it for a unit and gives it back.

A unit staged with a ``stacks/<unit>/unit.json`` of step ``qfin`` and a partition runs only
while its daemon holds ``locks/<partition>.qfin.lock``: one QFin at a time per raid partition
(the seed's rule: QFin reads its partition flat out). The lock is created exclusively
(link(2): of two daemons only one wins) holding a :class:`LockRecord` of the daemon's pid,
host, boot and the unit, before the claim; it is removed when the run ends (completed,
failed, or released at a stop), and only by the process it names.

A lock whose holder is dead (a daemon SIGKILLed mid-QFin, a node rebooted) is never taken
over: the unit waits, the daemon files one problem, ``spica nodes`` and the console show the
dead lock, and the operator clears it (``spica unlock --qfin PARTITION --node N``) once the
partition is looked at; the unit then runs, resuming at its progress line.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass

from spica_core.node.host import boot_id, hostname, iso_utc
from spica_core.node.layout import QFIN_STEP, NodeLayout
from spica_core.node.protocol import LockRecord, UnitRecord
from spica_core.node.records import claim_alive, read_record, write_record


@dataclass(frozen=True)
class LockBusy:
    """The partition's lock is held by another unit (alive) or by a dead holder."""

    partition: str
    holder: LockRecord | None
    alive: bool
    #: Why the lock file is unreadable, if it is (an empty legacy lock has no holder).
    malformed: str | None = None

    @property
    def message(self) -> str:
        lock = f"locks/{self.partition}.qfin.lock"
        if self.holder is None:
            return f"{lock} holds no holder ({self.malformed or 'empty'})"
        unit = f" (unit {self.holder.stack})" if self.holder.stack else ""
        state = "running" if self.alive else "dead"
        return f"{lock} is held by {state} pid {self.holder.pid} on {self.holder.host}{unit}"

    @property
    def key(self) -> str:
        """The same for every poll while the same holder keeps the lock."""
        holder = self.holder
        return f"{self.partition}:{holder.pid if holder else None}:{self.alive}:{self.malformed}"


def read_unit(layout: NodeLayout, stack: str) -> tuple[UnitRecord | None, str | None]:
    """The unit record staged with ``stack``: ``(record, None)``, ``(None, None)`` when it
    has none (an ordinary unit), ``(None, why)`` when the file is unusable."""
    record, why = read_record(layout.unit_file(stack), UnitRecord)
    if why == "missing":
        return None, None
    return record, why


def lock_partition(unit: UnitRecord | None) -> str | None:
    """The partition whose QFin lock the unit must hold while it runs, if any."""
    if unit is None or unit.step != QFIN_STEP:
        return None
    return unit.partition


def acquire(
    layout: NodeLayout, partition: str, stack: str, running: Collection[str]
) -> LockBusy | None:
    """Take the QFin lock of ``partition`` for ``stack``; None once held, else who holds it.

    A lock this very process left for a unit it no longer runs (or for ``stack`` itself) is
    this daemon's own and is taken again; any other holder, alive or dead, keeps it.
    """
    path = layout.qfin_lock(partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = LockRecord(
        pid=os.getpid(), host=hostname(), boot_id=boot_id(), acquired_at=iso_utc(), stack=stack
    )
    try:
        write_record(path, record, exclusive=True)
        return None
    except FileExistsError:
        pass
    holder, why = read_record(path, LockRecord, empty_ok=True)
    if holder is None and why == "missing":  # released meanwhile: try once more
        try:
            write_record(path, record, exclusive=True)
            return None
        except FileExistsError:
            holder, why = read_record(path, LockRecord, empty_ok=True)
    if (
        holder is not None
        and _ours(holder)
        and (holder.stack == stack or holder.stack not in running)
    ):
        write_record(path, record)
        return None
    return LockBusy(partition, holder, holder is not None and claim_alive(holder), why)


def release(layout: NodeLayout, partition: str, stack: str) -> bool:
    """Remove the lock of ``partition`` when this process holds it for ``stack``; whether
    it did. A lock of anyone else (an operator cleared ours and another daemon took it) stays.
    """
    path = layout.qfin_lock(partition)
    holder, _ = read_record(path, LockRecord, empty_ok=True)
    if holder is None or not _ours(holder) or holder.stack != stack:
        return False
    path.unlink(missing_ok=True)
    return True


def _ours(holder: LockRecord) -> bool:
    return holder.pid == os.getpid() and holder.host == hostname() and holder.boot_id == boot_id()

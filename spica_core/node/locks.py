"""Locks under ``locks/``: the QFin lock of each raid partition (held by QFin, listed and
released by the operator) and the node lock that serialises the moves of claims no process
owns among the daemons and agents of one root.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from spica_core.errors import InvalidName
from spica_core.names import validate_name
from spica_core.node.layout import QFIN_LOCK_SUFFIX, NodeLayout
from spica_core.node.protocol import LockRecord, QfinLock
from spica_core.node.records import claim_alive, read_record

#: ``locks/daemon.lock``: flock(2)ed by :func:`node_lock`, never removed.
NODE_LOCK = "daemon.lock"


@contextlib.contextmanager
def node_lock(layout: NodeLayout) -> Iterator[None]:
    """Serialise the moves of claims no process owns among the daemons of one root."""
    locks = layout.locks_dir()
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / NODE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def list_qfin_locks(root: Path) -> list[QfinLock]:
    """Every QFin lock file; an empty (legacy) lock has no holder and counts as not alive."""
    layout = NodeLayout(root)
    try:
        scan = os.scandir(layout.locks_dir())
    except FileNotFoundError:
        return []
    locks: list[QfinLock] = []
    with scan:
        for dirent in scan:
            if not dirent.name.endswith(QFIN_LOCK_SUFFIX):
                continue
            partition = dirent.name[: -len(QFIN_LOCK_SUFFIX)]
            try:
                validate_name(partition, "partition")
            except InvalidName:
                continue
            holder, why = read_record(Path(dirent.path), LockRecord, empty_ok=True)
            if holder is None and why is None:
                why = "empty lock file (no holder recorded)"
            alive = claim_alive(holder) if holder else False
            locks.append(QfinLock(partition=partition, holder=holder, alive=alive, malformed=why))
    locks.sort(key=lambda lock: lock.partition)
    return locks

"""Disk usage of a node's data partitions (``raid*`` under the root)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from spica_core.errors import InvalidName
from spica_core.names import validate_name
from spica_core.node.files import one_line
from spica_core.node.layout import PARTITION_PREFIX, NodeLayout, OutsideRoot
from spica_core.node.protocol import PartitionUsage


def discover_partitions(root: Path) -> list[str]:
    """Names of the entries directly under root that look like data partitions (``raid*``)."""
    names: list[str] = []
    try:
        scan = os.scandir(root)
    except OSError:
        return names
    with scan:
        for dirent in scan:
            if not dirent.name.startswith(PARTITION_PREFIX):
                continue
            try:
                validate_name(dirent.name, "partition")
                if not dirent.is_dir(follow_symlinks=True):
                    continue
            except (InvalidName, OSError):
                continue
            names.append(dirent.name)
    return sorted(names)


def tree_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``; symlinks are neither followed nor counted."""
    total = 0
    pending = [os.fspath(path)]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except OSError:
            continue
        with scan:
            for dirent in scan:
                try:
                    if dirent.is_dir(follow_symlinks=False):
                        pending.append(dirent.path)
                    elif dirent.is_file(follow_symlinks=False):
                        total += dirent.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return total


def partition_usage(
    root: Path,
    name: str,
    capacity: int | None = None,
    *,
    used_of: Callable[[Path], int] = tree_bytes,
) -> PartitionUsage:
    """Disk usage of partition ``name``; raises InvalidName for a bad name.

    With a ``capacity`` the partition is virtual (the demo's disks share one real filesystem):
    total = capacity, used = bytes of the files under it. Otherwise the filesystem's own
    figures (statvfs; free is what an unprivileged writer may use). ``used_of`` lets a caller
    put a cache in front of the tree walk.
    """
    validate_name(name, "partition")
    virtual = capacity is not None
    try:
        path = NodeLayout(root).partition_dir(name)
    except OutsideRoot as exc:
        return _unmeasured(name, virtual, exists=False, error=f"outside_root: {exc.reason}")
    if not path.is_dir():
        return _unmeasured(name, virtual, exists=False)
    if capacity is not None:
        used = used_of(path)
        return PartitionUsage(
            name=name,
            total_bytes=capacity,
            free_bytes=max(0, capacity - used),
            used_bytes=used,
            virtual=True,
            exists=True,
        )
    try:
        vfs = os.statvfs(path)
    except OSError as exc:
        return _unmeasured(name, False, exists=True, error=one_line(exc))
    total = vfs.f_blocks * vfs.f_frsize
    return PartitionUsage(
        name=name,
        total_bytes=total,
        free_bytes=vfs.f_bavail * vfs.f_frsize,
        used_bytes=total - vfs.f_bfree * vfs.f_frsize,
        virtual=False,
        exists=True,
    )


def _unmeasured(
    name: str, virtual: bool, *, exists: bool, error: str | None = None
) -> PartitionUsage:
    return PartitionUsage(
        name=name,
        total_bytes=None,
        free_bytes=None,
        used_bytes=None,
        virtual=virtual,
        exists=exists,
        error=error,
    )

"""Disk space for DataTransfer: the seed's "Virtual free disk" of each node partition.

Pure functions over plain values (so property tests can drive them); the reads that feed
them are in :mod:`spica_core.read_model.transfer`.

*Virtual free* of a partition is what a new plan may still promise there::

    virtual free = free - reserve - promised - products

* ``free`` and ``total``: the partition as its node last reported it (the monitor's figures
  or a poll);
* ``reserve``: the partition's configured ``reserved`` (kept free for outputs);
* ``promised``: Σ ``reserved_bytes`` of the ``transfer`` rows ``planned`` or ``running`` to
  that partition (each is ``space_factor`` x the file's bytes: raw + weight + flag + working
  space; a running copy is counted whole, since the part already written is also missing
  from ``free`` only until the copy ends);
* ``products``: the estimated outputs of the stacks not yet started (``planned`` and
  ``pending``) on that node — see :func:`stack_product_bytes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Transfer states whose ``reserved_bytes`` still hold space on their destination (an
#: interrupted copy is resumed there).
LIVE_TRANSFER_STATES = ("planned", "running", "interrupted")
#: Transfer states a new plan never replaces: their image is not planned again (a failed or
#: interrupted copy is retried by ``spica transfer run``, where its row says).
HELD_TRANSFER_STATES = ("running", "interrupted", "failed", "done")
#: Stack states whose products are not on disk yet and are estimated instead.
UNSTARTED_STACK_STATES = ("planned", "pending")


def needed_bytes(raw_bytes: int, space_factor: float) -> int:
    """Disk space a raw file (or runid) needs once processed: ``space_factor`` x its bytes,
    rounded up to a byte (the seed's "Disk space needed": 17.786 GB -> 71.145 GB)."""
    return math.ceil(raw_bytes * space_factor)


def stack_product_bytes(settled_inputs: Iterable[int], space_factor: float) -> int:
    """Estimated bytes a stack not yet started will write: ``(space_factor - 1)`` x the bytes
    of each of its input images already settled on a node.

    Why this estimate: the raw inputs are on disk (counted in ``free``); what the stack adds
    is of the order of a weight, a flag map and a resampled copy per input (SWarp keeps one
    per input), the allowance the transfer factor makes beyond the raw bytes. Inputs still
    arriving are left out by the caller: their transfer row already promises
    ``space_factor`` x their bytes, outputs included, and must not be counted twice.
    """
    return math.ceil(sum(settled_inputs) * (space_factor - 1.0))


@dataclass(frozen=True)
class PartitionSpace:
    """One partition's figures for DataTransfer (bytes)."""

    node: str
    partition: str
    total_bytes: int
    free_bytes: int
    reserved_bytes: int = 0
    promised_bytes: int = 0
    products_bytes: int = 0

    @property
    def virtual_free_bytes(self) -> int:
        """What a new plan may still promise here; never negative."""
        return max(
            0, self.free_bytes - self.reserved_bytes - self.promised_bytes - self.products_bytes
        )

    @property
    def used_percent(self) -> float:
        """The seed's per-node figure (``node1 : 33.6 %``): the share of the disk that is not
        virtually free."""
        if self.total_bytes <= 0:
            return 100.0
        return 100.0 * (1.0 - self.virtual_free_bytes / self.total_bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "reserved_bytes": self.reserved_bytes,
            "promised_bytes": self.promised_bytes,
            "products_bytes": self.products_bytes,
            "virtual_free_bytes": self.virtual_free_bytes,
            "used_percent": round(self.used_percent, 1),
        }


@dataclass(frozen=True)
class NodeSpace:
    """A node as DataTransfer sees it: whether it answers, its load of stacks waiting to
    run, and its partitions."""

    node: str
    #: The node's liveness value (``up``, ``agent-missing``, ``down``, ``unknown``).
    liveness: str
    #: Stacks ``planned`` or ``pending`` on the node (the planner prefers fewer).
    pending_stacks: int
    partitions: tuple[PartitionSpace, ...]

    @property
    def answers(self) -> bool:
        """Only a node that answers can be planned on (``unknown``: never polled)."""
        return self.liveness in ("up", "agent-missing")

    @property
    def total_bytes(self) -> int:
        return sum(p.total_bytes for p in self.partitions)

    @property
    def virtual_free_bytes(self) -> int:
        return sum(p.virtual_free_bytes for p in self.partitions)

    @property
    def used_percent(self) -> float:
        total = self.total_bytes
        return 100.0 * (1.0 - self.virtual_free_bytes / total) if total > 0 else 100.0

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.liveness,
            "pending_stacks": self.pending_stacks,
            "total_bytes": self.total_bytes,
            "virtual_free_bytes": self.virtual_free_bytes,
            "used_percent": round(self.used_percent, 1),
            "partitions": [p.to_json() for p in self.partitions],
        }


@dataclass(frozen=True)
class Disk:
    """A partition as its node reported it (the input of :func:`node_spaces`)."""

    node: str
    partition: str
    total_bytes: int
    free_bytes: int
    reserved_bytes: int = 0


def node_spaces(
    disks: Iterable[Disk],
    liveness: Mapping[str, str],
    *,
    promised: Mapping[tuple[str, str], int] | None = None,
    products: Mapping[tuple[str, str | None], int] | None = None,
    pending_stacks: Mapping[str, int] | None = None,
) -> list[NodeSpace]:
    """Every node of ``liveness`` with its partitions' virtual free.

    ``promised`` is keyed by (node, partition); ``products`` too, where a partition of
    None means "somewhere on the node" (a stack whose inputs' partition is unknown): that
    share is charged to the node's partition with the most free space after the rest. A
    node without reported disks (down, never polled) has no partitions.
    """
    promised = promised or {}
    products = products or {}
    pending_stacks = pending_stacks or {}
    by_node: dict[str, list[Disk]] = {name: [] for name in liveness}
    for d in disks:
        by_node.setdefault(d.node, []).append(d)
    out: list[NodeSpace] = []
    for node, parts in by_node.items():
        spaces = [
            PartitionSpace(
                node,
                d.partition,
                d.total_bytes,
                d.free_bytes,
                d.reserved_bytes,
                promised.get((node, d.partition), 0),
                products.get((node, d.partition), 0),
            )
            for d in sorted(parts, key=lambda d: d.partition)
        ]
        anywhere = products.get((node, None), 0)
        if anywhere and spaces:
            best = max(range(len(spaces)), key=lambda i: spaces[i].virtual_free_bytes)
            s = spaces[best]
            spaces[best] = PartitionSpace(
                s.node,
                s.partition,
                s.total_bytes,
                s.free_bytes,
                s.reserved_bytes,
                s.promised_bytes,
                s.products_bytes + anywhere,
            )
        out.append(
            NodeSpace(
                node, liveness.get(node, "unknown"), pending_stacks.get(node, 0), tuple(spaces)
            )
        )
    return out

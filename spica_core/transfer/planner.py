"""The placement planner: which node partition receives each image of a runid.

A pure function (:func:`plan_placement`) over plain values: the images with the space each
needs, and the nodes with their partitions' virtual free (:mod:`.space`). The rules, in
order of precedence:

1. a partition never receives more than its virtual free (which already keeps the reserve,
   the space promised to other transfers and the products of stacks not yet started);
2. a node that does not answer is never chosen;
3. every image is placed exactly once, or nothing is placed (an impossible plan places no
   file and says how much space is missing, and where);
4. a runid goes to as few nodes as the greedy can manage, and within it each filter too;
5. among nodes that would do equally, the one with the fewest stacks waiting to run
   (then the most virtual free, then the name).

Nodes already holding part of the runid (``holding``: images placed there, or planned for
another filter) count as chosen from the start, so planning a runid filter by filter still
keeps it together. The greedy: if one node can hold the whole runid, a node already
holding it, else the least loaded, takes it.
Otherwise filters are placed biggest first, each whole on a node already chosen when it
fits, else spread over the nodes already chosen when they can hold it (no new node), else
whole on the least loaded new node that can hold it, else spread over the chosen nodes and
then new ones, largest first. Within a node, images go first-fit, biggest first, into its
partitions taken from the most to the least free: a filter tends to stay on one partition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from spica_core.transfer.space import NodeSpace
from spica_core.units import distribution_cell, gigabytes


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name))


@dataclass(frozen=True)
class ImageNeed:
    """One image to place and the space it needs there (``space_factor`` x its bytes)."""

    image_id: int
    filename: str
    filter: str | None
    needed_bytes: int


@dataclass(frozen=True)
class Assignment:
    image: ImageNeed
    node: str
    partition: str


@dataclass(frozen=True)
class Shortfall:
    """Why a plan is impossible: how much space is missing, and where there is some."""

    needed_bytes: int
    #: Virtual free over every partition of the nodes that answer.
    available_bytes: int
    #: At least this much more virtual free would be needed (0: the space exists but is
    #: split over partitions too small for the images).
    missing_bytes: int
    unplaced: tuple[ImageNeed, ...]
    #: The most virtually free partition of a node that answers: (node, partition, bytes).
    largest_partition: tuple[str, str, int] | None
    #: Nodes left out because they do not answer.
    skipped_nodes: tuple[str, ...]

    def message(self) -> str:
        unplaced = sum(i.needed_bytes for i in self.unplaced)
        parts = [
            f"{len(self.unplaced)} image(s) needing {gigabytes(unplaced)} cannot be placed: "
            f"the runid needs {gigabytes(self.needed_bytes)}, the nodes that answer have "
            f"{gigabytes(self.available_bytes)} virtual free"
        ]
        if self.missing_bytes > 0:
            parts.append(f"{gigabytes(self.missing_bytes)} missing")
        else:
            biggest = max(self.unplaced, key=lambda i: i.needed_bytes)
            where = "no partition"
            if self.largest_partition is not None:
                node, part, free = self.largest_partition
                where = f"the largest is {node}:{part} with {gigabytes(free)}"
            parts.append(
                f"the space is split over partitions too small ({biggest.filename} needs "
                f"{gigabytes(biggest.needed_bytes)}; {where})"
            )
        if self.skipped_nodes:
            parts.append(f"not answering: {', '.join(self.skipped_nodes)}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "needed_bytes": self.needed_bytes,
            "available_bytes": self.available_bytes,
            "missing_bytes": self.missing_bytes,
            "unplaced": [i.filename for i in self.unplaced],
            "largest_partition": (
                None
                if self.largest_partition is None
                else dict(
                    zip(
                        ("node", "partition", "virtual_free_bytes"),
                        self.largest_partition,
                        strict=True,
                    )
                )
            ),
            "skipped_nodes": list(self.skipped_nodes),
            "message": self.message(),
        }


@dataclass(frozen=True)
class Plan:
    """Assignments of every image (or none, with a :class:`Shortfall`)."""

    assignments: tuple[Assignment, ...]
    shortfall: Shortfall | None = None

    @property
    def fits(self) -> bool:
        return self.shortfall is None

    def nodes(self) -> list[str]:
        return sorted({a.node for a in self.assignments}, key=_natural_key)

    def distribution(self) -> dict[str, tuple[int, float]]:
        """node -> (files, percent of the planned images), the seed's ``100.0% [2 files]``."""
        total = len(self.assignments)
        files: dict[str, int] = {}
        for a in self.assignments:
            files[a.node] = files.get(a.node, 0) + 1
        return {n: (files[n], 100.0 * files[n] / total) for n in self.nodes()}

    def distribution_row(self) -> str:
        """``mix1: 75.0% [3 files]  mix2: 25.0% [1 file]``; empty when nothing is placed."""
        return "  ".join(
            f"{node}: {distribution_cell(files, pct)}"
            for node, (files, pct) in self.distribution().items()
        )


# ----------------------------------------------------------------------------- packing

_Slot = list[Any]  # [node, partition, remaining bytes]: mutable, shared by the passes


def _room(slot: _Slot, image: ImageNeed) -> bool:
    """Whether ``slot`` can take ``image``: a full partition takes nothing, even empty."""
    free: int = slot[2]
    return free > 0 and image.needed_bytes <= free


def _pack(images: Sequence[ImageNeed], slots: Sequence[_Slot]) -> list[_Slot] | None:
    """First-fit of ``images`` (biggest first) into ``slots`` (most free first), without
    touching them: the slot of each image, or None when one does not fit (see :func:`_room`)."""
    order = sorted(range(len(slots)), key=lambda i: -slots[i][2])
    remaining = [slots[i][2] for i in order]
    chosen: list[_Slot] = []
    for image in images:
        need = image.needed_bytes
        for k, free in enumerate(remaining):
            if need <= free and free > 0:
                remaining[k] = free - need
                chosen.append(slots[order[k]])
                break
        else:
            return None
    return chosen


def _could_hold(images: Sequence[ImageNeed], slots: Sequence[_Slot], total: int) -> bool:
    """Cheap necessary condition before packing: enough space, and a slot for the biggest."""
    if not images:
        return True
    space: list[int] = [s[2] for s in slots]
    return bool(space) and sum(space) >= total and max(space) >= images[0].needed_bytes


def _commit(images: Sequence[ImageNeed], chosen: Sequence[_Slot], out: list[Assignment]) -> None:
    for image, slot in zip(images, chosen, strict=True):
        slot[2] -= image.needed_bytes
        out.append(Assignment(image, slot[0], slot[1]))


def _biggest_first(images: Iterable[ImageNeed]) -> list[ImageNeed]:
    return sorted(images, key=lambda i: (-i.needed_bytes, i.filename, i.image_id))


def plan_placement(
    images: Sequence[ImageNeed], nodes: Sequence[NodeSpace], holding: Iterable[str] = ()
) -> Plan:
    """Place every image on a partition of a node that answers (see the module docstring
    for the rules); ``holding`` names the nodes already holding part of the runid.
    Deterministic for the same inputs."""
    if not images:
        return Plan(())
    if len({i.image_id for i in images}) != len(images):
        raise ValueError("plan_placement: an image is listed twice")
    if any(i.needed_bytes < 0 for i in images):
        raise ValueError("plan_placement: a negative size")
    answering = [n for n in nodes if n.answers and n.partitions]
    skipped = tuple(sorted((n.node for n in nodes if not n.answers), key=_natural_key))
    slots: dict[str, list[_Slot]] = {
        n.node: [
            [n.node, p.partition, p.virtual_free_bytes]
            for p in sorted(n.partitions, key=lambda p: p.partition)
        ]
        for n in answering
    }
    everything = _biggest_first(images)
    total = sum(i.needed_bytes for i in everything)

    def load_key(n: NodeSpace) -> tuple[Any, ...]:
        return (n.pending_stacks, -n.virtual_free_bytes, _natural_key(n.node))

    held = set(holding)
    out: list[Assignment] = []
    # 1. The whole runid on one node: one already holding it, else the least loaded.
    for node in sorted(answering, key=lambda n: (n.node not in held, *load_key(n))):
        node_slots = slots[node.node]
        if _could_hold(everything, node_slots, total):
            chosen = _pack(everything, node_slots)
            if chosen is not None:
                _commit(everything, chosen, out)
                return Plan(tuple(out))

    # 2. Several nodes, filter by filter.
    groups: dict[str, list[ImageNeed]] = {}
    for image in everything:
        groups.setdefault(image.filter or "", []).append(image)
    ordered = sorted(groups.items(), key=lambda kv: (-sum(i.needed_bytes for i in kv[1]), kv[0]))
    by_size = sorted(
        answering, key=lambda n: (-n.virtual_free_bytes, n.pending_stacks, _natural_key(n.node))
    )
    opened = [n.node for n in sorted(answering, key=load_key) if n.node in held]
    unplaced: list[ImageNeed] = []
    for _, group in ordered:
        need = sum(i.needed_bytes for i in group)
        placed = False
        # a) whole on a chosen node: the one it fills best (least free left).
        fits_whole = [
            (sum(s[2] for s in slots[n]), n) for n in opened if _could_hold(group, slots[n], need)
        ]
        for _, name in sorted(fits_whole):
            chosen = _pack(group, slots[name])
            if chosen is not None:
                _commit(group, chosen, out)
                placed = True
                break
        if placed:
            continue
        # b) spread over the chosen nodes, when they can hold it without a new node.
        chosen_slots = [s for n in opened for s in slots[n]]
        if opened and _could_hold(group, chosen_slots, need):
            chosen = _pack(group, chosen_slots)
            if chosen is not None:
                _commit(group, chosen, out)
                continue
        # c) whole on one new node: the least loaded that can hold it.
        for node in sorted((n for n in answering if n.node not in opened), key=load_key):
            if _could_hold(group, slots[node.node], need):
                chosen = _pack(group, slots[node.node])
                if chosen is not None:
                    _commit(group, chosen, out)
                    opened.append(node.node)
                    placed = True
                    break
        if placed:
            continue
        # d) spread: the chosen nodes first, then new ones from the largest.
        pool = [s for n in opened for s in slots[n]]
        spare = [n.node for n in by_size if n.node not in opened]
        for image in group:
            slot = next((s for s in pool if _room(s, image)), None)
            while slot is None and spare:
                name = spare.pop(0)
                opened.append(name)
                fresh = sorted(slots[name], key=lambda s: -s[2])
                pool.extend(fresh)
                slot = next((s for s in fresh if _room(s, image)), None)
            if slot is None:
                unplaced.append(image)
                continue
            slot[2] -= image.needed_bytes
            out.append(Assignment(image, slot[0], slot[1]))

    if not unplaced:
        return Plan(tuple(out))
    return Plan((), _shortfall(total, answering, unplaced, skipped))


def _shortfall(
    total: int,
    answering: Sequence[NodeSpace],
    unplaced: Sequence[ImageNeed],
    skipped: tuple[str, ...],
) -> Shortfall:
    available = sum(n.virtual_free_bytes for n in answering)
    largest = min(
        ((n.node, p.partition, p.virtual_free_bytes) for n in answering for p in n.partitions),
        key=lambda t: (-t[2], _natural_key(t[0]), t[1]),
        default=None,
    )
    return Shortfall(
        needed_bytes=total,
        available_bytes=available,
        missing_bytes=max(0, total - available),
        unplaced=tuple(unplaced),
        largest_partition=largest,
        skipped_nodes=skipped,
    )

"""Benchmark: the placement planner on a large runid over a large cluster.

Plans ``--images`` images (default 10,000; MegaCam-like sizes of 0.55 to 0.75 GB raw, five
filters, ``space_factor`` 4) over ``--nodes`` nodes of ``--partitions`` partitions each
(default 50 x 2 = 100 partitions; 650 GB and 1870 GB disks like the seed's, partly used,
some nodes down, some loaded) in four shapes: a runid one node can hold, a runid spread
over many nodes, one that fills 90 % of the cluster, and an impossible one. Prints the
best of ``--repeat`` times of each, the nodes used and whether every rule held. Target:
< 1 s for 10,000 images over 100 partitions. The planner is pure: no dbspica and no node
is involved.

    .venv/bin/python bench/transfer_plan.py [--images 10000] [--nodes 50] [--partitions 2]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from spica_core.transfer.planner import ImageNeed, Plan, plan_placement
from spica_core.transfer.space import NodeSpace, PartitionSpace, needed_bytes

GB = 10**9
FILTERS = ["u", "g", "r", "i", "z"]


def cluster(nodes: int, partitions: int, rng: random.Random) -> list[NodeSpace]:
    out = []
    for n in range(nodes):
        name = f"node{n + 1}"
        total = (652 if n % 2 else 1870) * GB
        parts = tuple(
            PartitionSpace(
                name,
                f"raid{p + 1}",
                total,
                int(total * rng.uniform(0.4, 0.95)),
                20 * GB,
                int(total * rng.uniform(0.0, 0.1)),
            )
            for p in range(partitions)
        )
        liveness = "down" if n % 17 == 5 else "up"
        out.append(NodeSpace(name, liveness, rng.randrange(0, 6), parts))
    return out


def runid(images: int, rng: random.Random, scale: float = 1.0) -> list[ImageNeed]:
    return [
        ImageNeed(
            i,
            f"{800000 + i}p.fits.fz",
            FILTERS[i % 5],
            needed_bytes(int(rng.uniform(0.55, 0.75) * GB * scale), 4.0),
        )
        for i in range(images)
    ]


def rules_hold(images: list[ImageNeed], nodes: list[NodeSpace], plan: Plan) -> bool:
    free = {(n.node, p.partition): p.virtual_free_bytes for n in nodes for p in n.partitions}
    answering = {n.node for n in nodes if n.answers}
    used: Counter[tuple[str, str]] = Counter()
    for a in plan.assignments:
        used[(a.node, a.partition)] += a.image.needed_bytes
    placed = Counter(a.image.image_id for a in plan.assignments)
    return (
        all(b <= free[k] for k, b in used.items())
        and all(a.node in answering for a in plan.assignments)
        and all(c == 1 for c in placed.values())
        and (len(placed) == len(images) if plan.fits else not placed)
    )


def timed(images: list[ImageNeed], nodes: list[NodeSpace], repeat: int) -> tuple[float, Plan]:
    best = float("inf")
    plan = Plan(())
    for _ in range(repeat):
        start = time.perf_counter()
        plan = plan_placement(images, nodes)
        best = min(best, time.perf_counter() - start)
    return best, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2004)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    nodes = cluster(args.nodes, args.partitions, rng)
    free = sum(n.virtual_free_bytes for n in nodes if n.answers)
    print(
        f"cluster: {args.nodes} nodes x {args.partitions} partitions, "
        f"{sum(not n.answers for n in nodes)} down, {free / 1e12:.1f} TB virtual free"
    )
    shapes = [
        ("one node", runid(max(1, args.images // 50), rng)),
        ("spread", runid(args.images, rng)),
        # Sized from the cluster's virtual free (an image needs 4 x 0.65 GB on average).
        ("90% full", runid(args.images, rng, scale=0.9 * free / (args.images * 2.6 * GB))),
        ("impossible", runid(args.images, rng, scale=1.1 * free / (args.images * 2.6 * GB))),
    ]
    for label, images in shapes:
        seconds, plan = timed(images, nodes, args.repeat)
        need = sum(i.needed_bytes for i in images)
        outcome = f"{len(plan.nodes())} node(s)" if plan.fits else "impossible"
        print(
            f"{label:>10}: {len(images):>6} images, {need / 1e12:6.2f} TB needed -> {outcome}; "
            f"{seconds * 1000:8.1f} ms (best of {args.repeat}); "
            f"rules hold: {rules_hold(images, nodes, plan)}"
        )


if __name__ == "__main__":
    main()

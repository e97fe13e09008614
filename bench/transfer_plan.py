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
                                            [--db-url URL]

``--db-url`` (an empty database; MariaDB: create it first) also times ``spica transfer plan``'s
core end to end on the "spread" runid: reading the space and the images from dbspica,
planning, and writing the transfer rows in one transaction.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from datetime import UTC, datetime

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


def time_store(db_url: str, images: list[ImageNeed], nodes: list[NodeSpace]) -> None:
    """Store the runid's images, then plan it through the store, as the CLI does."""
    from sqlalchemy.orm import Session

    from spica_core.cluster_snapshot import ClusterSnapshot, Liveness, NodeSnapshot
    from spica_core.cluster_snapshot import PartitionStatus as Part
    from spica_core.config import DatabaseConfig, SpicaConfig
    from spica_core.db.engine import make_engine
    from spica_core.db.models import Image, Runid
    from spica_core.db.schema import upgrade
    from spica_core.transfer.store import plan_runid

    engine = make_engine(DatabaseConfig(url=db_url), create=True)
    upgrade(engine)
    with Session(engine) as s, s.begin():
        run = Runid(name="09BQ01", images=len(images))
        s.add(run)
        s.flush()
        s.add_all(
            Image(
                filename=i.filename,
                runid_id=run.id,
                filter=i.filter,
                bytes=i.needed_bytes // 4,
                repository="fc1",
            )
            for i in images
        )
    now = datetime.now(UTC)
    cluster = ClusterSnapshot(
        now,
        tuple(
            NodeSnapshot(
                n.node,
                "127.0.0.1",
                22,
                Liveness(n.liveness),
                partitions=tuple(
                    Part(p.partition, p.total_bytes, p.free_bytes, 0, p.reserved_bytes)
                    for p in n.partitions
                ),
            )
            for n in nodes
        ),
    )
    config = SpicaConfig.model_validate(
        {
            "db": {"url": db_url},
            "nodes": [{"name": n.node, "host": "127.0.0.1", "root": "/data"} for n in nodes],
        }
    )
    start = time.perf_counter()
    outcome = plan_runid(engine, config, cluster, "09BQ01")
    seconds = time.perf_counter() - start
    print(
        f"{'stored':>10}: {len(outcome.files):>6} transfer rows planned on "
        f"{len(outcome.plan.nodes())} node(s) ({engine.dialect.name}); {seconds * 1000:8.1f} ms"
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2004)
    parser.add_argument("--db-url", help="also time the stored plan on this empty database")
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
    if args.db_url:
        # The "spread" runid, with the nodes' promised space and products kept as free.
        time_store(args.db_url, shapes[1][1], nodes)


if __name__ == "__main__":
    main()

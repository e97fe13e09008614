"""Benchmark: ``spica auto`` planning a T0007-sized release.

Writes ``--images`` synthetic image rows (default 7,042, the size of the seed's T0007) to a
fresh SQLite dbspica: QFin done, graded (a tenth C), five MegaCam filters, dithered
pointings a degree apart over the four CFHTLS Wide fields, spread over ``--nodes`` nodes
(default 40) of two partitions. Then times :func:`spica_core.auto.plan.plan_auto` end to
end on CFHTLS tiles (19354² pixels of 0.186"): reading the images, the rules, the tiles each
exposure touches, SCAMP groups, nodes and copies, every unit's command lines, and the
lookup of existing stacks. Prints the best of ``--repeat`` runs (wall clock, and the CPU
time, steadier on a shared machine) and the units planned.
Target: < 10 s. Then, unless ``--no-build``, one demo-sized stack built through its lines
with the real tools (``bench/stack_build.py``'s default unit; target < 60 s).

    .venv/bin/python bench/auto.py [--images 7042] [--nodes 40] [--repeat 3] [--no-build]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

#: The CFHTLS Wide fields (deg): W1 to W4.
FIELDS = [
    ("W1", 30.0, 39.0, -11.2, -3.7),
    ("W2", 132.0, 137.0, -5.7, -0.9),
    ("W3", 208.0, 221.0, 51.2, 57.8),
    ("W4", 329.9, 335.9, -1.0, 4.6),
]
FILTERS = ["u.MP9301", "g.MP9401", "r.MP9601", "i.MP9702", "z.MP9801"]


def pointings() -> list[tuple[float, float]]:
    """Pointing centres a degree apart over the fields."""
    out = []
    for _, ra0, ra1, dec0, dec1 in FIELDS:
        dec = dec0
        while dec <= dec1:
            step = 1.0 / math.cos(math.radians(dec))
            ra = ra0
            while ra <= ra1:
                out.append((ra, dec))
                ra += step
            dec += 1.0
    return out


def write_rows(db_url: str, images: int, nodes: int, rng: random.Random) -> None:
    from sqlalchemy.orm import Session

    from spica_core.config import DatabaseConfig
    from spica_core.db.engine import make_engine
    from spica_core.db.models import Image, Node, Runid
    from spica_core.db.schema import upgrade

    engine = make_engine(DatabaseConfig(url=db_url), create=True)
    upgrade(engine)
    centres = pointings()
    with Session(engine) as s, s.begin():
        node_rows = [
            Node(name=f"node{n + 1}", host="127.0.0.1", root="/data") for n in range(nodes)
        ]
        s.add_all(node_rows)
        runs = [Runid(name=f"07BQ{r:02d}") for r in range(1, 13)]
        s.add_all(runs)
        s.flush()
        rows = []
        for i in range(images):
            ra, dec = centres[i % len(centres)]
            node = node_rows[(i // 7) % nodes]
            run = runs[i % len(runs)]
            partition = f"raid{1 + i % 2}"
            name = f"{700000 + i}p"
            rows.append(
                Image(
                    filename=name,
                    runid_id=run.id,
                    filter=FILTERS[(i // len(centres)) % len(FILTERS)],
                    ra=(ra + rng.uniform(-0.01, 0.01)) % 360.0,
                    dec=dec + rng.uniform(-0.01, 0.01),
                    exptime=rng.choice([300.0, 400.0, 600.0]),
                    airmass=rng.uniform(1.0, 1.8),
                    seeing=rng.uniform(0.5, 1.2),
                    grade="C" if i % 10 == 9 else rng.choice("AB"),
                    qf_status="done",
                    node_id=node.id,
                    partition=partition,
                    path=f"/data/{partition}/{run.name}/{name}.fits.fz",
                    bytes=rng.randrange(550, 750) * 10**6,
                    checksum=None,
                    phot_c=None if i % 13 == 0 else 26.0 + rng.uniform(-0.1, 0.1),
                    phot_k=0.1,
                )
            )
        s.add_all(rows)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=7042)
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2007)
    parser.add_argument("--build", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    from spica_core.auto.plan import AutoQuery, plan_auto
    from spica_core.config import SpicaConfig
    from spica_core.db.engine import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/dbspica.sqlite"
        write_rows(db_url, args.images, args.nodes, random.Random(args.seed))
        refcat = Path(tmp) / "refcat.csv"
        refcat.write_text("ra,dec,mag\n34.5,-7.0,18.0\n134.5,-3.0,18.0\n")
        config = SpicaConfig.model_validate(
            {
                "db": {"url": db_url},
                "nodes": [
                    {"name": f"node{n + 1}", "host": "127.0.0.1", "root": "/data"}
                    for n in range(args.nodes)
                ],
                "grids": [
                    {
                        "name": "cfhtls-wide",
                        "fields": [
                            {"name": n, "ra_min": a, "ra_max": b, "dec_min": c, "dec_max": d}
                            for n, a, b, c, d in FIELDS
                        ],
                    }
                ],
                "releases": [
                    {
                        "name": "T0007",
                        "grid": "cfhtls-wide",
                        "reference_catalogue": str(refcat),
                        "rules": {"grades": ["A", "B"], "min_exptime": 60, "max_seeing": 1.1,
                                  "max_seeing_filter": {"u": 1.4}, "max_airmass": 1.7},
                    }
                ],
            }
        )  # fmt: skip
        engine = make_engine(config.db)
        best = cpu = float("inf")
        plan = None
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            plan = plan_auto(engine, config, AutoQuery())
            best = min(best, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
        engine.dispose()
    assert plan is not None
    scamp = sum(len(u.unit.scamp_inputs) for u in plan.units)
    swarp = sum(len(u.unit.swarp_inputs) for u in plan.units)
    copies = sum(len(u.copies) for u in plan.units)
    lines = sum(len(u.commands) for u in plan.units)
    print(
        f"{args.images} images on {args.nodes} nodes: {len(plan.units)} stack units "
        f"({swarp} SWarp and {scamp} SCAMP inputs, {copies} copies, {lines} command lines), "
        f"{len(plan.refused)} images refused; planned in {best:.2f} s, {cpu:.2f} s of CPU "
        f"(best of {args.repeat}; target < 10 s)"
    )
    if args.build:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from stack_build import build

        build()


if __name__ == "__main__":
    main()

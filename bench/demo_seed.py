"""Benchmark: the demo repository's placement (the story's first step), and the console's
DataTransfer read.

Starts a demo cluster of ``--nodes`` (no daemons) in a temporary directory, prepares its
dbspica, then times the placement twice: the first writes the synthetic exposures, ingests
them, plans and copies four runids to the nodes over SSH; the second finds everything in
place (what a restarted story pays). Then times
:func:`spica_core.console_transfer.read_transfer_view` (the screen's read at each poll).

    .venv/bin/python bench/demo_seed.py [--nodes 8] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    from spica_core.config import load_config
    from spica_core.console_transfer import read_transfer_view
    from spica_core.db.engine import make_engine
    from spica_core.db.setup import prepare_database
    from spica_core.demo.cluster import DemoCluster
    from spica_core.demo.story import PLACED, place
    from spica_core.transfer.disks import cluster_figures

    with tempfile.TemporaryDirectory() as tmp:
        cluster = DemoCluster(Path(tmp) / "demo")
        try:
            cluster.up(args.nodes, daemons=False)
            config = load_config(cluster.config_path)
            prepare_database(config, create=True)
            engine = make_engine(config.db)
            started = time.perf_counter()
            first = place(config, engine, PLACED)
            first_s = time.perf_counter() - started
            started = time.perf_counter()
            again = place(config, engine, PLACED)
            again_s = time.perf_counter() - started
            print(f"first placement: {first_s:.2f} s ({len(first)} problems)")
            print(f"later placement: {again_s:.2f} s ({len(again)} problems, nothing redone)")
            snapshot = cluster_figures(engine, config, poll=True).cluster
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                read_transfer_view(engine, config, snapshot, datetime.now(UTC))
                times.append(time.perf_counter() - started)
            print(
                f"DataTransfer screen read: median {1000 * statistics.median(times):.1f} ms, "
                f"max {1000 * max(times):.1f} ms over {args.repeat} reads"
            )
            engine.dispose()
        finally:
            cluster.down()


if __name__ == "__main__":
    main()

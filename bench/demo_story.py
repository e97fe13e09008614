"""Benchmark: ``spica demo`` from a cold start to the first completed co-add, seconds.

Does what ``spica demo`` does in a new temporary directory — the cluster of ``--nodes`` up
with its daemons and monitor, dbspica prepared, the story driver started detached — without
the console, then waits for the story's first completed co-add (``story.json``) and prints
its seconds from the cold start, with the time each step of the story was done. Target:
under 3 minutes on this 2-core machine.

    .venv/bin/python bench/demo_story.py [--nodes 8] [--timeout 900] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--keep", type=Path, help="Run in this (new) directory and keep it.")
    args = parser.parse_args()

    from spica_core.config import load_config
    from spica_core.db.setup import prepare_database
    from spica_core.demo.cluster import DemoCluster
    from spica_core.demo.story import read_story

    base = args.keep or Path(tempfile.mkdtemp(prefix="spica-story-"))
    since = datetime.now(UTC)
    started = time.monotonic()
    cluster = DemoCluster(base / "demo")
    try:
        cluster.up(args.nodes, daemons=True)
        prepare_database(load_config(cluster.config_path), create=True)
        cluster.start_monitor()
        cluster.start_story(since=since)
        print(f"cluster up, story started: {time.monotonic() - started:.1f} s")
        story = None
        while time.monotonic() - started < args.timeout:
            story = read_story(cluster.paths)
            if story is not None and (story.first_coadd or story.error or story.finished):
                break
            time.sleep(0.5)
        if story is None:
            print("the story never started (see logs/story.log)")
            return
        for step, when in story.steps.items():
            seconds = (datetime.fromisoformat(when) - since).total_seconds()
            print(f"  {seconds:6.0f} s  {step}")
        if story.first_coadd is not None:
            first = story.first_coadd
            print(
                f"first co-add: {first.stack} on {first.node}, {first.seconds:.0f} s from the "
                f"cold start (target < 180 s)"
            )
        else:
            print(f"no co-add completed: {story.error or 'timed out'}; notes: {story.notes}")
    finally:
        cluster.down()
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

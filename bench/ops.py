"""Benchmark: a bulk requeue of many failed stacks over a demo cluster, batched against one
stack at a time, in the same run.

Starts a demo cluster of ``--nodes`` nodes (default 20) in a temporary directory, seeds sets
of ``--stacks`` failed stacks each (default 1,000) spread evenly over the nodes, the way the
tests do (queue files, progress and commands on the nodes; rows in dbspica), connects every
node's agent, then requeues sets the one-stack-at-a-time way (each dry run, intent, move and
dbspica update alone, one node after another: ``batch=1, concurrency=1`` and apply chunks of
one stack) and the batched way (every node at once, ``moves`` batches, dbspica in chunks on a
worker thread). A plan changes nothing, so each path plans its first set once to warm up and
then ``--repeat`` times (default 5); the median is its plan time (min and max printed beside
it): a single 60 ms plan on a two-core machine running 40 node processes is at the mercy of
one scheduling hiccup. An apply does change its stacks, so each path applies ``--applies``
sets (default 3), each seeded for it, the two paths in turn; the median is its apply time
(one batched apply moved by 2x from run to run). Prints plan and apply times of
both and the ratios, with the machine's load average (``/proc/loadavg``) before and after:
the one-at-a-time path waits on round trips and fsyncs, so a loaded machine slows it more
than the batched one. Target: plan and apply each >= 10x faster, and the batched apply
under 5 s.

    .venv/bin/python bench/ops.py [--nodes 20] [--stacks 1000] [--repeat 5] [--applies 3]
                                  [--db-url URL] [--keep DIR]

``--db-url`` names an empty database (MariaDB: create it first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import Liveness
from spica_core.config import SpicaConfig, load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Node, Stack
from spica_core.demo.cluster import DemoCluster
from spica_core.executor.agents import DEFAULT_BATCH, AgentExecutor
from spica_core.node_pool import NodePool
from spica_core.operations import actions
from spica_core.operations.model import OpAction, OperationRequest, Outcome, Selection


def seed(config: SpicaConfig, engine: Engine, prefix: str, count: int) -> list[str]:
    """``count`` failed stacks spread over the nodes, as a daemon leaves them."""
    nodes = [n.name for n in config.nodes]
    names = [f"{prefix}_{i:05d}_T0003" for i in range(count)]
    with Session(engine) as s, s.begin():
        rows = {n.name: n for n in s.scalars(select(Node))}
        for i, name in enumerate(names):
            node = config.node(nodes[i % len(nodes)])
            root = Path(node.root)
            (root / "stacks" / name).mkdir(parents=True)
            (root / "stacks" / name / "commands.sh").write_text("true\nfalse\n")
            (root / "stacks" / name / "progress").write_text("1\n")
            (root / "queue" / f"{name}.error").write_text(
                json.dumps({"line": 2, "exit_code": 1, "message": "Failed on false - Line 2"})
            )
            s.add(Stack(name=name, node=rows[node.name], state="failed", lines=2, failed_line=2))
    return names


async def connect(pool: NodePool) -> float:
    """Every node connected and answered by its agent (not what is measured)."""
    t0 = time.perf_counter()
    while True:
        snap = await pool.refresh()
        if all(n.liveness is Liveness.UP for n in snap.nodes):
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > 300:
            raise SystemExit("agents not up after 300 s")
        await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Timed:
    """One path's figures: its plan times (after the warm-up), apply times (one per set of
    stacks) and the outcomes of every apply."""

    plans: list[float]
    applies: list[float]
    outcomes: Counter[str]

    @property
    def plan(self) -> float:
        return statistics.median(self.plans)

    @property
    def apply(self) -> float:
        return statistics.median(self.applies)

    def plan_text(self) -> str:
        return _spread(self.plan, self.plans, 3)

    def apply_text(self) -> str:
        return _spread(self.apply, self.applies, 2)


def _spread(median: float, values: list[float], digits: int) -> str:
    return f"{median:7.{digits}f} s (min {min(values):.{digits}f}, max {max(values):.{digits}f})"


async def requeue(
    config: SpicaConfig,
    engine: Engine,
    executor: AgentExecutor,
    names: list[str],
    *,
    chunk: int,
    repeat: int,
) -> tuple[list[float], float, Counter[str]]:
    """A requeue of ``names``: its plan times (``repeat`` plans, after a warm-up one when
    ``repeat`` is over 0; else the one plan that readies the apply, not reported), its
    apply time and outcomes."""
    request = OperationRequest(OpAction.REQUEUE, Selection(names=tuple(names)), "bench")
    plans = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        plan = await actions.plan(request, engine, executor, config)
        plans.append(time.perf_counter() - t0)
    if plan.refused:
        raise SystemExit(f"refused at planning: {plan.refused[0].refused}")
    t0 = time.perf_counter()
    results = await actions.apply(plan, engine, executor, chunk_size=chunk)
    applied = time.perf_counter() - t0
    return plans[1:], applied, Counter(r.outcome.value for r in results)


def _load() -> str:
    """The 1, 5 and 15 minute load averages (as /proc/loadavg has them), or "?"."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--stacks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="plans timed per path")
    parser.add_argument(
        "--applies", type=int, default=3, help="applies timed per path, each on its own stacks"
    )
    parser.add_argument("--db-url", help="dbspica (default: the demo's SQLite file)")
    parser.add_argument("--keep", type=Path, help="use (and keep) this demo directory")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="spica-bench-ops-"))
    demo = DemoCluster(base / "demo")
    t0 = time.perf_counter()
    demo.up(args.nodes, timeout=300)
    print(f"demo cluster of {args.nodes} nodes up in {time.perf_counter() - t0:.1f} s")
    config_path = demo.config_path
    if args.db_url:
        config_path = demo.directory / "bench.toml"
        text = demo.config_path.read_text()
        start = text.index('url = "')
        end = text.index("\n", start)
        config_path.write_text(text[:start] + f"url = {json.dumps(args.db_url)}" + text[end:])
    try:
        init = subprocess.run(
            [sys.executable, "-m", "spica_tui", "--config", str(config_path), "db", "init"],
            capture_output=True,
            text=True,
        )
        if init.returncode != 0:
            raise SystemExit(f"db init failed: {init.stderr}")
        config = load_config(config_path)
        engine = make_engine(config.db)
        t0 = time.perf_counter()
        applies = max(1, args.applies)
        sets = {
            path: [seed(config, engine, f"BENCH_{path}{k}", args.stacks) for k in range(applies)]
            for path in ("ONE", "MANY")
        }
        print(
            f"seeded 2 x {applies} x {args.stacks} failed stacks in "
            f"{time.perf_counter() - t0:.1f} s"
        )

        async def run() -> tuple[Timed, Timed]:
            async with NodePool(config) as pool:
                print(f"every agent up after {await connect(pool):.1f} s")
                executors = {
                    "ONE": (AgentExecutor(pool, batch=1, concurrency=1), 1),
                    "MANY": (AgentExecutor(pool, batch=DEFAULT_BATCH), actions.APPLY_CHUNK),
                }
                figures: dict[str, Timed] = {path: Timed([], [], Counter()) for path in executors}
                # Round by round, one path then the other: drift of the machine falls on both.
                for k in range(applies):
                    for path, (executor, chunk) in executors.items():
                        plans, applied, outcomes = await requeue(
                            config,
                            engine,
                            executor,
                            sets[path][k],
                            chunk=chunk,
                            repeat=max(1, args.repeat) if k == 0 else 0,
                        )
                        figures[path].plans.extend(plans)
                        figures[path].applies.append(applied)
                        figures[path].outcomes.update(outcomes)
                return figures["ONE"], figures["MANY"]

        load_before = _load()
        old, new = asyncio.run(run())
        engine.dispose()
    finally:
        demo.down()
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    where = args.db_url.split(":", 1)[0] if args.db_url else "sqlite"
    print(f"requeue of {args.stacks} failed stacks over {args.nodes} nodes (dbspica: {where})")
    applied = Outcome.APPLIED.value
    for label, timed in (("one at a time:", old), ("batched:", new)):
        print(
            f"  {label:15} plan {timed.plan_text()}   apply {timed.apply_text()}"
            f"   {dict(timed.outcomes)}"
        )
    plan_ratio, apply_ratio = old.plan / new.plan, old.apply / new.apply
    print(
        f"  ratio:          plan {plan_ratio:6.1f}x   apply {apply_ratio:6.1f}x"
        f"   plan+apply {(old.plan + old.apply) / (new.plan + new.apply):6.1f}x"
    )
    print(f"  load average:   before {load_before}   after {_load()}")
    every = old.outcomes[applied] == new.outcomes[applied] == applies * args.stacks
    met = plan_ratio >= 10 and apply_ratio >= 10 and new.apply < 5 and every
    verdict = "met" if met else "NOT met"
    print(f"target (plan and apply >= 10x, apply < 5 s, every stack applied): {verdict}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

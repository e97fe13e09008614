"""Benchmark: one full NodePool refresh over a demo cluster, against the old way.

Starts a demo cluster of N nodes (default 100) in a temporary directory, then prints the
median and p95 wall time of one ``NodePool.refresh()`` over ROUNDS rounds, paced like the
console (one refresh every ``--interval`` seconds). The rounds start once every node is
answered by its agent (a node polled through plain commands meanwhile is not what is
measured; the first, connecting round and the time until every agent greeted are reported
apart) and after ``--warmup`` more rounds; a round where a node is not answered by its
agent stops the benchmark. Then the same information gathered the old way — a new OpenSSH
``ssh`` process per node per command (``df -P`` of the partitions, a listing of
``queue/``, ``/proc/loadavg``), all nodes in parallel — with the ratio. Target: median
under 250 ms for 100 nodes and at least 5x faster than the baseline.

    .venv/bin/python bench/poll.py [--nodes 100] [--rounds 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from spica_core.cluster_snapshot import ClusterSnapshot, Liveness
from spica_core.config import SpicaConfig, load_config
from spica_core.demo.cluster import DemoCluster
from spica_core.node_pool import NodePool


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def populate(config: SpicaConfig) -> None:
    """A realistic queue on each node: a few dozen stacks in every state."""
    for i, node in enumerate(config.nodes):
        queue = Path(node.root) / "queue"
        for j in range(30):
            suffix = ("spica", "processed", "processed", "error")[j % 4]
            (queue / f"CFHTLS_W_r_{i:03d}{j:03d}_T0003.{suffix}").write_text("{}")
        (Path(node.root) / "raid1" / "805282p.fits").write_bytes(b"\0" * 100_000)


async def pool_rounds(
    config: SpicaConfig, rounds: int, warmup: int, interval: float
) -> tuple[float, list[float]]:
    async with NodePool(config) as pool:
        t0 = time.perf_counter()
        snap = await pool.refresh()
        first = time.perf_counter() - t0
        if snap.unreachable:
            raise SystemExit(f"unreachable after connecting: {snap.unreachable}")
        # Measure the agent path only: a node polled through plain commands is another thing.
        while not_up := not_through_agent(snap):
            if time.perf_counter() - t0 > 300:
                raise SystemExit(f"agents not up after 300 s: {not_up}")
            await asyncio.sleep(interval)
            snap = await pool.refresh()
        all_up = time.perf_counter() - t0
        times = []
        for i in range(warmup + rounds):
            await asyncio.sleep(interval)
            t0 = time.perf_counter()
            snap = await pool.refresh()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
            if not_up := not_through_agent(snap):
                raise SystemExit(f"round {i}: nodes not answered by their agent: {not_up}")
    return first, all_up, times


def not_through_agent(snap: ClusterSnapshot) -> dict[str, str]:
    return {n.name: n.liveness.value for n in snap.nodes if n.liveness is not Liveness.UP}


async def old_way_round(config: SpicaConfig, demo: DemoCluster) -> float:
    """One ssh process per node per command, every node at once (the seed's crontab way)."""
    ssh = shutil.which("ssh")
    assert ssh, "the baseline needs the OpenSSH client (apt-get install openssh-client)"

    async def run(node, command: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            ssh,
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={demo.known_hosts_path}",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(demo.client_key_path),
            "-p",
            str(node.port),
            "-l",
            node.user or "root",
            node.host,
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"baseline ssh to {node.name} failed: {err.decode()[-300:]}")

    commands = []
    for node in config.nodes:
        parts = [f"{node.root}/{p.name}" for p in node.partitions]
        commands += [
            (node, shlex.join(["df", "-P", "-k", *parts])),
            (node, shlex.join(["ls", "-l", "--time-style=+%s", f"{node.root}/queue"])),
            (node, "cat /proc/loadavg"),
        ]
    t0 = time.perf_counter()
    await asyncio.gather(*(run(n, c) for n, c in commands))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--baseline-rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--keep", type=Path, help="use (and keep) this demo directory")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="spica-bench-poll-"))
    demo = DemoCluster(base / "demo")
    t0 = time.perf_counter()
    demo.up(args.nodes, timeout=300)
    print(f"demo cluster of {args.nodes} nodes up in {time.perf_counter() - t0:.1f} s")
    try:
        config = load_config(demo.config_path)
        populate(config)
        first, all_up, times = asyncio.run(
            pool_rounds(config, args.rounds, args.warmup, args.interval)
        )
        base_times = []
        for _ in range(args.baseline_rounds):
            time.sleep(args.interval)
            base_times.append(asyncio.run(old_way_round(config, demo)))
    finally:
        demo.down()
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    med, p95 = statistics.median(times), pct(times, 0.95)
    bmed, bp95 = statistics.median(base_times), pct(base_times, 0.95)
    print(f"NodePool first refresh (connect + agent start): {first * 1000:8.1f} ms")
    print(f"every node answered by its agent after:         {all_up * 1000:8.1f} ms")
    print(
        f"NodePool refresh, {args.rounds} rounds:"
        f"  median {med * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms"
    )
    print(
        f"baseline (ssh process per node per command, 3 commands), {args.baseline_rounds} rounds:"
        f"  median {bmed * 1000:8.1f} ms   p95 {bp95 * 1000:8.1f} ms"
    )
    print(f"ratio baseline / NodePool (medians): {bmed / med:.1f}x")
    target = "met" if med < 0.250 and bmed / med >= 5 else "NOT met"
    print(f"target (median < 250 ms, >= 5x): {target}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

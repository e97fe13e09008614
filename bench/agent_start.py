"""Benchmark: the start of the node agent, ``spica node serve``, as a connection starts it.

Spawns ``python -m spica_tui node serve --root R`` N times (default 30) over a root holding a
queue of pending, failed and completed stacks, and prints the median and p95 time to the hello
line and to the first ``status`` answer (sent as soon as the hello came). With ``--ref REV``
the same runs are made, interleaved, from a ``git worktree`` of REV (e.g. ``main~3``) with
the same interpreter, and the ratio of the medians is printed. Target: within 10% of before.

    .venv/bin/python bench/agent_start.py [--runs 30] [--ref REV] [--stacks 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATUS = {"id": 1, "verb": "status", "args": {"states": ["pending", "running", "failed"]}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def make_root(root: Path, stacks: int) -> None:
    """A node root with ``stacks`` queue files (a third each pending, failed, completed)."""
    for sub in ("queue", "stacks", "raid1", "locks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(stacks):
        name = f"BENCH_T{i:05d}"
        kind = i % 3
        if kind == 0:
            record = {
                "stack": name,
                "priority": 0,
                "launched_at": "2026-01-01T00:00:00Z",
                "by": "b",
            }
            (root / "queue" / f"{name}.spica").write_text(json.dumps(record))
        elif kind == 1:
            record = {"line": 2, "exit_code": 1, "message": "swarp failed"}
            (root / "queue" / f"{name}.error").write_text(json.dumps(record))
        else:
            (root / "queue" / f"{name}.processed").write_text("")


def one_start(source: Path, root: Path) -> tuple[float, float]:
    """(seconds to the hello line, seconds to the first status answer) of one agent."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spica_tui", "node", "serve", "--root", str(root)],
        cwd=source,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        hello = proc.stdout.readline()
        greeted = time.perf_counter()
        if not hello.startswith(b"{"):
            raise SystemExit(f"agent of {source} did not greet: {hello!r}")
        proc.stdin.write(json.dumps(STATUS).encode() + b"\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        answered = time.perf_counter()
        if not answer.get("ok"):
            raise SystemExit(f"agent of {source} refused status: {answer}")
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    return greeted - started, answered - started


def report(label: str, runs: list[tuple[float, float]]) -> tuple[float, float]:
    hello = [h for h, _ in runs]
    status = [s for _, s in runs]
    print(
        f"{label:>10}: hello median {statistics.median(hello) * 1000:6.1f} ms"
        f"  p95 {pct(hello, 0.95) * 1000:6.1f} ms | first status median"
        f" {statistics.median(status) * 1000:6.1f} ms  p95 {pct(status, 0.95) * 1000:6.1f} ms"
    )
    return statistics.median(hello), statistics.median(status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--stacks", type=int, default=300)
    parser.add_argument("--ref", help="a git revision to compare with, e.g. main~3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spica-agent-start-") as tmp:
        root = Path(tmp) / "root"
        make_root(root, args.stacks)
        sources = {"this": REPO}
        if args.ref:
            ref_tree = Path(tmp) / "ref"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(ref_tree), args.ref],
                check=True,
                capture_output=True,
            )
            sources[args.ref] = ref_tree
        try:
            for source in sources.values():
                one_start(source, root)  # warm the page cache and the bytecode
            results: dict[str, list[tuple[float, float]]] = {label: [] for label in sources}
            for _ in range(args.runs):
                for label, source in sources.items():  # interleaved: same load for both
                    results[label].append(one_start(source, root))
            print(f"{args.runs} starts each, {args.stacks} queue files, {sys.executable}")
            medians = {label: report(label, runs) for label, runs in results.items()}
            if args.ref:
                (h_new, s_new), (h_ref, s_ref) = medians["this"], medians[args.ref]
                print(
                    f"{'ratio':>10}: hello {h_new / h_ref:.3f}x, first status {s_new / s_ref:.3f}x"
                    f" (this / {args.ref})"
                )
        finally:
            if args.ref:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(ref_tree)],
                    check=False,
                    capture_output=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

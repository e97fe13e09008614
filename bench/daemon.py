"""Benchmark: the node daemon's per-line overhead and its requeue latency.

Starts a real ``spica daemon`` (a subprocess) on a node root in a temporary directory, with
a SQLite dbspica, and prints:

* **per line** — a stack of LINES trivial lines (``true``), from its claim until dbspica holds
  it completed (every ``stack_run`` row written): the wall time per line, the same less
  the bare cost of ``/bin/sh -c true`` measured here, and the daemon's own CPU time per line
  (steady under load, for comparing two trees). Target: under 20 ms a line.
* **requeue → first line** — a failed stack requeued as ``spica requeue`` does it (``.error``
  renamed to ``.spica``, then its launch record written), until its failed line is running
  again (the line itself writes the time). Target: under 1 s. (A bare rename by hand, the
  seed's way, leaves the error record in the file: the daemon waits 2 s for it to settle.)

    .venv/bin/python bench/daemon.py [--lines 200] [--requeues 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from spica_core.config import load_config
from spica_core.db.models import Stack, StackRun
from spica_core.db.setup import prepare_database
from spica_core.node.host import iso_utc
from spica_core.node.layout import NodeLayout
from spica_core.node.protocol import LaunchRecord
from spica_core.node.records import write_record
from spica_core.stack_add import add_stack, launch_stack

CONFIG = """\
[db]
url = "sqlite:///{base}/dbspica.sqlite"
[daemon]
poll_interval = 2.0
heartbeat_interval = 5.0
[[nodes]]
name = "mix1"
host = "127.0.0.1"
root = "{base}/root"
[[nodes.partitions]]
name = "raid1"
"""


def wait(condition, timeout: float = 120.0, step: float = 0.002):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit("benchmark: timed out")
        time.sleep(step)
    return value


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` itself (not its children): unlike wall time, it
    hardly moves with the machine's load, so two trees can be compared on a busy day."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_shell(lines: int) -> float:
    """Seconds per ``/bin/sh -c true`` with its output to a file, as the runner starts it."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        for _ in range(lines):
            subprocess.Popen(
                [b"/bin/sh", b"-c", b"true"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            ).wait()
        return (time.perf_counter() - t0) / lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--requeues", type=int, default=10)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args()

    base = Path(args.keep or tempfile.mkdtemp(prefix="spica-bench-daemon-")).resolve()
    (base / "root" / "raid1").mkdir(parents=True, exist_ok=True)
    (base / "root" / "queue").mkdir(exist_ok=True)
    config_path = base / "spica.toml"
    config_path.write_text(CONFIG.format(base=base))
    config = load_config(config_path)
    prepare_database(config, create=True)
    engine = create_engine(config.db.url, poolclass=NullPool)
    layout = NodeLayout(base / "root")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "spica_tui", "--config", str(config_path), "daemon"],
        stdout=open(base / "daemon.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait(lambda: (base / "root" / "daemon.heartbeat").exists(), 30, 0.05)
        time.sleep(1.0)  # let the daemon settle (first dbspica read, imports)

        # -- per line -----------------------------------------------------------------------
        add_stack(engine, config, "BENCH_LINES", "mix1", b"true\n" * args.lines)
        cpu0 = cpu_seconds(daemon.pid)
        t0 = time.perf_counter()
        launch_stack(engine, config, "BENCH_LINES", "bench")

        def completed() -> bool:
            with Session(engine) as s:
                return s.scalar(select(Stack.state).where(Stack.name == "BENCH_LINES")) == (
                    "completed"
                )

        wait(lambda: (layout.queue_dir() / "BENCH_LINES.processed").exists())
        wait(completed, step=0.001)  # polled only now: a poll costs the daemon CPU time
        total = time.perf_counter() - t0
        cpu_per_line = (cpu_seconds(daemon.pid) - cpu0) / args.lines
        with Session(engine) as s:
            rows = s.execute(
                select(StackRun.started_at, StackRun.ended_at)
                .join(Stack)
                .where(Stack.name == "BENCH_LINES")
                .order_by(StackRun.line)
            ).all()
        assert len(rows) == args.lines, f"{len(rows)} stack_run rows, expected {args.lines}"
        running = (rows[-1][1] - rows[0][0]).total_seconds()
        shell = bare_shell(args.lines)
        per_line = total / args.lines

        # -- requeue -> first line ----------------------------------------------------------
        stamp = base / "root" / "first"
        line = f"date +%s.%N > {stamp}; test -e ../../ok"
        add_stack(engine, config, "BENCH_REQUEUE", "mix1", f"{line}\n".encode())
        launch_stack(engine, config, "BENCH_REQUEUE", "bench")
        queue = base / "root" / "queue"
        latencies: list[float] = []
        for _ in range(args.requeues):
            wait(lambda: (queue / "BENCH_REQUEUE.error").exists())
            stamp.unlink(missing_ok=True)
            time.sleep(0.2)
            t_requeue = time.time()
            # As `spica requeue` does: the rename, then the launch record in the file.
            os.rename(queue / "BENCH_REQUEUE.error", queue / "BENCH_REQUEUE.spica")
            write_record(
                queue / "BENCH_REQUEUE.spica",
                LaunchRecord(stack="BENCH_REQUEUE", priority=0, launched_at=iso_utc(), by="bench"),
            )
            wait(lambda: stamp.exists() and stamp.read_text().strip())
            latencies.append(float(stamp.read_text()) - t_requeue)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        engine.dispose()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    print(f"per line ({args.lines} lines of 'true', SQLite dbspica):")
    print(f"  claim to completed in dbspica  {total:7.3f} s   {per_line * 1000:6.2f} ms/line")
    print(f"  first line start to last end   {running:7.3f} s   (from stack_run)")
    print(f"  daemon CPU (user + system)     {cpu_per_line * 1000:6.2f} ms/line")
    print(f"  bare /bin/sh -c true           {shell * 1000:6.2f} ms/line")
    print(
        f"  runner overhead                {(per_line - shell) * 1000:6.2f} ms/line"
        f"   target < 20 ms: {'ok' if per_line < 0.020 else 'MISSED'}"
    )
    print(f"requeue to first line running ({args.requeues} requeues, inotify):")
    print(
        f"  median {statistics.median(latencies) * 1000:6.1f} ms   max "
        f"{max(latencies) * 1000:6.1f} ms   target < 1 s: "
        f"{'ok' if max(latencies) < 1.0 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()

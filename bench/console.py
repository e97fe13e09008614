"""Benchmark: the console on a big dbspica and a big cluster, driven like an operator would.

Builds a dbspica with ``--stacks`` stacks (default 100,000) over a ``--nodes`` demo cluster
(default 100), then runs the real ``spica console`` in a pseudo-terminal (160x50) and prints:

* time to first full paint: from starting the process to the screen showing the nodes panel
  with every node polled and the first page of stacks with its count;
* key-press-to-screen latency (median, p95) for moving the cursor (the status line shows the
  new row) and for typing a filter (the screen shows the filtered count), plain text and regex;
* the console process's CPU use while idle at a 2 s refresh, in % of one core;
* for scale, the same rows loaded into a stock Textual ``DataTable`` (its own small app in the
  same pseudo-terminal, reading every row from dbspica, as a table without windowing must) and
  the ratio of the two first paints;
* beside them, the load average and the console's own CPU time by the first paint and per
  cursor move: on a machine shared with other work the wall times also count the waits for a
  core, the CPU times do not.

A cluster monitor (``spica watch``) runs beside the nodes, as ``spica demo`` starts it, so the
console reads the node figures from dbspica (``--no-monitor``: the console polls the nodes).

Targets (issue 12): first paint < 1.5 s and <= 0.15x the stock table's, cursor move p95
< 100 ms, plain and regex filter p95 < 300 ms, idle CPU < 10 % with the monitor running.

    .venv/bin/python bench/console.py [--nodes 100] [--stacks 100000] [--idle 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import random
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import termios
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from sqlalchemy import insert, select

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Image, Node, Problem, Runid, Stack
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.errors import UsageError
from spica_core.monitor.figures import read_monitor_view
from spica_core.read_model import StackSelection, count_stacks, list_stacks

COLS, ROWS = 160, 50
STATES = ["completed"] * 70 + ["failed"] * 5 + ["pending"] * 15 + ["running"] * 5
STATES += ["planned"] * 5


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fill(engine, n_stacks: int) -> None:  # type: ignore[no-untyped-def]
    """n stacks over the registered nodes, with runids, images and problems."""
    rnd = random.Random(42)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        nodes = [row[0] for row in conn.execute(select(Node.id).order_by(Node.id))]
        runids = [f"0{3 + i % 5}{'AB'[i % 2]}L{i:02d}" for i in range(40)]
        conn.execute(insert(Runid), [{"name": r} for r in runids])
        runid_ids = [row[0] for row in conn.execute(select(Runid.id))]
        conn.execute(
            insert(Image),
            [
                {
                    "filename": f"{700000 + i}p",
                    "runid_id": rnd.choice(runid_ids),
                    "node_id": rnd.choice(nodes),
                    "filter": "ugriz"[i % 5],
                }
                for i in range(5000)
            ],
        )
        for start in range(0, n_stacks, 20000):
            rows = []
            for i in range(start, min(n_stacks, start + 20000)):
                state = rnd.choice(STATES)
                rows.append(
                    {
                        "name": f"CFHTLS_W_{'ugriz'[i % 5]}_{i:06d}_T0003",
                        "step": "stack",
                        "state": state,
                        "node_id": nodes[i % len(nodes)],
                        "priority": rnd.randint(0, 9),
                        "runid": rnd.choice(runids),
                        "filter": "ugriz"[i % 5],
                        "lines": 12,
                        "progress": 12 if state == "completed" else rnd.randint(0, 11),
                        "error": "Failed on spica_copy.pl - Code 2 - Line 7"
                        if state == "failed"
                        else None,
                        "created_at": now - timedelta(minutes=i),
                        "updated_at": now - timedelta(seconds=i),
                    }
                )
            conn.execute(insert(Stack), rows)
        conn.execute(
            insert(Problem),
            [
                {
                    "kind": "software",
                    "node": f"node{i}",
                    "message": "Failed on spica_copy.pl - Code 2",
                    "created_at": now - timedelta(minutes=i),
                }
                for i in range(200)
            ],
        )


def wait_for_monitor(engine, config, nodes: int, timeout: float = 300.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until the monitor's figures in dbspica show every node up."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        view = read_monitor_view(engine, config, datetime.now(UTC))
        if view is not None:
            up = sum(1 for n in view.cluster.nodes if n.liveness.reachable)
            if up == nodes:
                return time.perf_counter() - t0
        time.sleep(0.5)
    raise SystemExit(f"the monitor did not record {nodes} nodes up within {timeout:.0f} s")


class Terminal:
    """The console in a pty; every byte it writes is kept with the time it arrived."""

    def __init__(self, argv: list[str]) -> None:
        self.start = time.perf_counter()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the console, sized from its tty
            os.environ.pop("COLUMNS", None)
            os.environ.pop("LINES", None)
            os.environ["TERM"] = "xterm-256color"
            os.execv(argv[0], argv)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.chunks: list[tuple[float, bytes]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.chunks.append((time.perf_counter(), data))

    def since(self, t0: float) -> bytes:
        with self.lock:
            return b"".join(d for t, d in self.chunks if t >= t0)

    def wait_for(self, markers: list[bytes], t0: float, timeout: float = 60.0) -> float:
        """Seconds from ``t0`` until every marker has appeared in what came after ``t0``."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                data = b"".join(d for t, d in self.chunks if t >= t0)
                arrival = self.chunks[-1][0] if self.chunks else t0
            if all(m in data for m in markers):
                return arrival - t0
            time.sleep(0.002)
        tail = data[-400:].decode(errors="replace")
        raise SystemExit(f"timed out waiting for {markers!r}; the screen's last output:\n{tail!r}")

    def press(self, key: bytes) -> float:
        t0 = time.perf_counter()
        os.write(self.fd, key)
        return t0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        try:
            os.write(self.fd, b"q")
            for _ in range(100):
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
                time.sleep(0.05)
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (OSError, ChildProcessError):
            pass


def stock_table(config_path: Path) -> None:
    """The baseline: a stock ``DataTable`` holding every stack of the view, loaded at mount
    (the rows read from dbspica through the read model, the cells the console's columns)."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding, BindingType
    from textual.widgets import DataTable, Static

    from spica_core.read_model import list_stacks
    from spica_tui.console.panels.stacks import _value, layout_columns

    class StockTable(App[None]):
        BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "quit", "Quit")]

        CSS = "DataTable { height: 1fr; } #status { dock: top; height: 1; }"

        def compose(self) -> ComposeResult:
            yield Static(id="status")
            yield DataTable(cursor_type="row")

        def on_mount(self) -> None:
            engine = make_engine(load_config(config_path).db)
            rows = list_stacks(engine, StackSelection())
            engine.dispose()
            columns = [c for c in layout_columns(COLS - 2) if c.title]
            table = self.query_one(DataTable)
            table.add_columns(*(c.title for c in columns))
            table.add_rows([_value(c.title, row) for c in columns] for row in rows)
            self.query_one(Static).update(f"stock DataTable: {len(rows):,} rows")

    StockTable().run()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--stock-table":  # the baseline's own process
        stock_table(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--stacks", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU sampling")
    parser.add_argument("--keys", type=int, default=30, help="cursor moves to time")
    parser.add_argument("--keep", type=Path, help="keep the demo cluster and dbspica here")
    parser.add_argument(
        "--no-renice",
        action="store_true",
        help="leave the demo nodes and the monitor at the console's priority (by default they "
        "run at nice 10: on a real cluster each node's agent runs on its own machine, and the "
        "monitor is a service of its own)",
    )
    parser.add_argument(
        "--leave-running",
        action="store_true",
        help="with --keep: leave the demo cluster and its monitor running for the next run",
    )
    parser.add_argument(
        "--no-monitor", action="store_true", help="no spica watch: the console polls the nodes"
    )
    parser.add_argument("--no-stock", action="store_true", help="skip the stock DataTable baseline")
    args = parser.parse_args()
    if args.leave_running and args.keep is None:
        parser.error("--leave-running needs --keep DIR")
    # SIGTERM (or SIGINT, ignored in a background job) still takes the demo cluster down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    load0 = os.getloadavg()[0]
    directory = args.keep or Path(tempfile.mkdtemp(prefix="spica-bench-console-"))
    cluster = DemoCluster(directory / "cluster")
    term: Terminal | None = None
    try:
        print(f"starting a {args.nodes}-node demo cluster in {cluster.directory} …", flush=True)
        cluster.up(args.nodes, timeout=300)
        config = load_config(cluster.config_path)
        prepare_database(config, create=True)
        engine = make_engine(config.db)
        with engine.connect() as conn:
            have = conn.scalar(select(Stack.id).limit(1))
        if have is None:
            t0 = time.perf_counter()
            fill(engine, args.stacks)
            print(f"dbspica: {args.stacks:,} stacks in {time.perf_counter() - t0:.1f} s")
        total = count_stacks(engine, StackSelection())
        if not args.no_renice:  # the agents each SSH connection starts inherit it
            for node in cluster.status().nodes:
                if node.pid:
                    os.setpriority(os.PRIO_PROCESS, node.pid, 10)
        monitor = "no monitor: the console polls the nodes"
        if not args.no_monitor:
            pid = cluster.start_monitor() or cluster.status().monitor_pid
            if pid and not args.no_renice:
                os.setpriority(os.PRIO_PROCESS, pid, 10)
            waited = wait_for_monitor(engine, config, args.nodes)
            monitor = f"spica watch running (all nodes recorded up after {waited:.1f} s)"

        stock = None
        if not args.no_stock:
            first = list_stacks(engine, StackSelection(), limit=1)[0].name
            term = Terminal([sys.executable, __file__, "--stock-table", str(cluster.config_path)])
            stock = term.wait_for(
                [f"stock DataTable: {total:,} rows".encode(), first.encode()], term.start, 300
            )
            term.stop()
            term = None

        spica = Path(sys.executable).parent / "spica"
        term = Terminal([str(spica), "--config", str(cluster.config_path), "console"])

        # First full paint: every panel drawn with data — the nodes listed (those not yet
        # answering shown so), the first page of stacks and its count, dbspica's panels.
        paint = term.wait_for(
            [f"/{args.nodes} up".encode(), f"row 1 of {total:,}".encode(), b"Problems ("],
            term.start,
        )
        paint_cpu = term.cpu_seconds()  # on a shared machine the wall time also counts waits
        polled = term.wait_for([f"Nodes {args.nodes}/{args.nodes} up".encode()], term.start)
        time.sleep(5)  # let the first polls settle: every agent started, connections warm

        moves: list[float] = []
        c0 = term.cpu_seconds()
        for row in range(2, 2 + args.keys):
            t0 = term.press(b"\x1b[B")
            moves.append(term.wait_for([f"row {row:,} of {total:,}".encode()], t0))
            time.sleep(0.15)
        move_cpu = (term.cpu_seconds() - c0) / args.keys

        def filter_latency(text: str) -> list[float]:
            times = []
            term.press(b"/")
            time.sleep(0.3)
            typed = ""
            for ch in text:
                typed += ch
                try:
                    expected = count_stacks(engine, StackSelection(text=typed))
                except UsageError:  # an unfinished regex: shown as such, nothing to time
                    term.press(ch.encode())
                    time.sleep(0.3)
                    continue
                marker = f"of {expected:,}".encode() if expected else b"no rows"
                t0 = term.press(ch.encode())
                times.append(term.wait_for([marker], t0))
                time.sleep(0.2)
            term.press(b"\x1b")  # escape: clear the filter
            time.sleep(1.0)
            return times

        plain = filter_latency("_04213")
        regex = filter_latency("_0421[0-3]_")

        # Idle: no key for a while, polling 100 nodes and dbspica every 2 s.
        time.sleep(2)
        c0, w0 = term.cpu_seconds(), time.perf_counter()
        time.sleep(args.idle)
        idle = 100 * (term.cpu_seconds() - c0) / (time.perf_counter() - w0)

        ms = 1000
        nice = "same priority" if args.no_renice else "node agents at nice 10"
        print(
            f"\nconsole on {total:,} stacks, {args.nodes} nodes ({COLS}x{ROWS} terminal, "
            f"{os.cpu_count()} cores shared with the nodes, {nice}):"
        )
        print(f"  {monitor}")
        print(f"  load average (1 min)     {load0:.2f} at the start, {os.getloadavg()[0]:.2f} now")
        print(
            f"  first full paint         {paint:6.2f} s    (target < 1.5 s;"
            f" the console's CPU by then {paint_cpu:.2f} s)"
        )
        if stock is not None:
            print(
                f"  stock DataTable paint    {stock:6.2f} s    ratio {paint / stock:.3f}"
                "    (target <= 0.15)"
            )
        print(f"  every node answered      {polled:6.2f} s    (SSH + agent start on each node)")
        print(
            f"  move cursor              median {statistics.median(moves) * ms:5.0f} ms"
            f"  p95 {pct(moves, 0.95) * ms:5.0f} ms    (target p95 < 100 ms;"
            f" CPU {move_cpu * ms:.0f} ms a move, polls included)"
        )
        print(
            f"  filter, plain text       median {statistics.median(plain) * ms:5.0f} ms"
            f"  p95 {pct(plain, 0.95) * ms:5.0f} ms    (target p95 < 300 ms)"
        )
        print(
            f"  filter, regex            median {statistics.median(regex) * ms:5.0f} ms"
            f"  p95 {pct(regex, 0.95) * ms:5.0f} ms    (target p95 < 300 ms)"
        )
        print(f"  idle CPU at 2 s refresh  {idle:6.1f} % of one core    (target < 10 %)")
        engine.dispose()
    finally:
        if term is not None:
            term.stop()
        if not args.leave_running:
            cluster.down()
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()

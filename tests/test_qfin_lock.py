"""The daemon's QFin lock: one QFin unit per raid partition at a time, a dead holder's lock
kept until the operator clears it.

Real parts: a demo node over SSH (units staged through its agent), its real daemon of
several slots, dbspica on SQLite and MariaDB. The lock is the daemon's: the units' commands
are plain shell lines that only witness what runs when (a directory that exists while a unit
is inside its partition, files that two units wait for each other through).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Problem, Stack, StackRun
from spica_core.demo.cluster import DemoCluster
from spica_core.node.protocol import LockRecord
from spica_core.stack_add import StackSpec, add_stacks
from tests.conftest import invoke_spica
from tests.daemon_support import wait_for
from tests.qfin_units_support import NODE, demo_cluster

#: Seconds a unit's line waits for a file before it fails (never reached when all is well).
PATIENCE = 120


@pytest.fixture
def demo(tmp_path: Path, db_url: str):
    """One demo node on ``db_url`` whose daemon has four slots: enough for every unit of a
    test to run at once but for the lock."""
    yield from demo_cluster(tmp_path, db_url, slots=4)


def wait_file(path: Path) -> str:
    """A shell line that waits for ``path`` (fails after PATIENCE seconds)."""
    q = shlex.quote(str(path))
    return (
        f"i=0; while [ ! -e {q} ]; do i=$((i+1)); [ $i -gt {PATIENCE * 10} ] && exit 1; "
        "sleep 0.1; done"
    )


def add_qfin(demo: DemoCluster, units: dict[str, tuple[str, list[str]]]) -> None:
    """QFin units (name -> (partition, lines)) staged over SSH and launched."""
    config = load_config(demo.config_path)
    engine = make_engine(config.db)
    specs = [
        StackSpec(name, NODE, ("\n".join(lines) + "\n").encode(), step="qfin", partition=part)
        for name, (part, lines) in units.items()
    ]
    try:
        result = add_stacks(engine, config, specs, launch=True, by="test", over_ssh=True)
    finally:
        engine.dispose()
    assert not result.failed and not result.not_launched, result
    assert {a.stack: a.state for a in result.added} == dict.fromkeys(units, "pending")


def engine_of(demo: DemoCluster):  # type: ignore[no-untyped-def]
    return make_engine(load_config(demo.config_path).db)


def state(demo: DemoCluster, name: str) -> str | None:
    engine = engine_of(demo)
    try:
        with Session(engine) as s:
            return s.scalars(select(Stack.state).where(Stack.name == name)).one_or_none()
    finally:
        engine.dispose()


def runs(demo: DemoCluster, name: str) -> list[StackRun]:
    engine = engine_of(demo)
    try:
        with Session(engine) as s:
            stmt = (
                select(StackRun)
                .join(Stack)
                .where(Stack.name == name)
                .order_by(StackRun.attempt, StackRun.line)
            )
            rows = list(s.scalars(stmt))
            s.expunge_all()
            return rows
    finally:
        engine.dispose()


def problems(demo: DemoCluster) -> list[str]:
    engine = engine_of(demo)
    try:
        with Session(engine) as s:
            return list(s.scalars(select(Problem.message).order_by(Problem.id)))
    finally:
        engine.dispose()


def lock_holder(demo: DemoCluster, partition: str) -> LockRecord | None:
    path = demo.node_root(NODE) / "locks" / f"{partition}.qfin.lock"
    try:
        return LockRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def daemon_pid(demo: DemoCluster) -> int:
    (node,) = demo.status().nodes
    assert node.daemon_alive and node.daemon_pid is not None
    return node.daemon_pid


def test_one_qfin_per_partition_while_partitions_run_at_once(
    demo: DemoCluster, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    inside = shlex.quote(str(marks / "raid1.inside"))
    first, second, other = "811001p_qfin_T0003", "811002p_qfin_T0003", "812001p_qfin_T0003"
    add_qfin(
        demo,
        {
            # Each raid1 unit is "inside" raid1 from its first line to its last: mkdir fails
            # (and the unit with it) if the other one is inside too.
            first: (
                "raid1",
                [
                    f"mkdir {inside}",
                    f"touch {shlex.quote(str(marks / 'first.started'))}",
                    wait_file(marks / "other.started"),
                    f"rmdir {inside}",
                ],
            ),
            second: ("raid1", [f"mkdir {inside}", "sleep 0.2", f"rmdir {inside}"]),
            # raid2 runs beside raid1's unit: each waits for the other to have started.
            other: (
                "raid2",
                [
                    f"touch {shlex.quote(str(marks / 'other.started'))}",
                    wait_file(marks / "first.started"),
                ],
            ),
        },
    )
    demo.up(daemons=True)
    for name in (first, second, other):
        wait_for(lambda n=name: state(demo, n) in ("completed", "failed"), 120, f"{name} to end")
    assert {n: state(demo, n) for n in (first, second, other)} == dict.fromkeys(
        (first, second, other), "completed"
    )
    spans = {}
    for name in (first, second):
        rows = runs(demo, name)
        assert [(r.line, r.exit_code) for r in rows] == [(i, 0) for i in range(1, len(rows) + 1)]
        spans[name] = (rows[0].started_at, rows[-1].ended_at)
    (a_start, a_end), (b_start, b_end) = spans[first], spans[second]
    assert a_end <= b_start or b_end <= a_start, f"raid1 units overlapped: {spans}"
    # The raid2 unit ran while raid1's first unit did (each waited for the other to start).
    other_rows = runs(demo, other)
    assert other_rows[0].started_at < a_end and a_start < other_rows[-1].ended_at
    # Every lock given back; waiting for a live lock is no problem.
    assert not list((demo.node_root(NODE) / "locks").glob("*.qfin.lock"))
    assert problems(demo) == []


def test_a_dead_daemons_lock_holds_until_unlock_qfin_then_the_unit_resumes(
    demo: DemoCluster, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    unit = "811003p_qfin_T0003"
    started, go = marks / "line2.started", marks / "go"
    add_qfin(
        demo,
        {
            unit: (
                "raid1",
                [
                    "echo one",
                    f"touch {shlex.quote(str(started))} && {wait_file(go)}",
                    "echo three",
                ],
            )
        },
    )
    demo.up(daemons=True)
    first_daemon = daemon_pid(demo)
    wait_for(started.exists, 60, "line 2 to start")
    holder = lock_holder(demo, "raid1")
    assert holder is not None and holder.pid == first_daemon and holder.stack == unit

    os.kill(first_daemon, signal.SIGKILL)
    wait_for(lambda: not demo.status().nodes[0].daemon_alive, 30, "the daemon to die")
    demo.up(daemons=True)  # a new daemon: recovers the stale claim, pending at line 2
    second_daemon = daemon_pid(demo)
    assert second_daemon != first_daemon
    queue = demo.node_root(NODE) / "queue"
    wait_for(lambda: (queue / f"{unit}.spica").exists(), 60, "the claim to be recovered")
    message = wait_for(
        lambda: [m for m in problems(demo) if "unlock --qfin raid1" in m], 60, "the lock problem"
    )
    assert f"{unit} waits: locks/raid1.qfin.lock is held by dead pid {first_daemon}" in message[0]
    # The new daemon keeps beating and never takes the dead lock over: the unit stays pending.
    beat = demo.node_root(NODE) / "daemon.heartbeat"
    seen = beat.stat().st_mtime_ns
    wait_for(lambda: beat.stat().st_mtime_ns != seen, 30, "a heartbeat")
    seen = beat.stat().st_mtime_ns
    wait_for(lambda: beat.stat().st_mtime_ns != seen, 30, "another heartbeat")
    assert (queue / f"{unit}.spica").exists()
    assert lock_holder(demo, "raid1") == holder
    assert len([m for m in problems(demo) if "unlock --qfin" in m]) == 1  # said once

    nodes = invoke_spica("--config", str(demo.config_path), "nodes", "--poll", "--json")
    (shown,) = json.loads(nodes.stdout)
    assert [(lock["partition"], lock["alive"]) for lock in shown["qfin_locks"]] == [
        ("raid1", False)
    ]

    go.touch()
    cleared = invoke_spica(
        "--config", str(demo.config_path), "unlock", "--qfin", "raid1", "--node", NODE, "--yes"
    )
    assert cleared.returncode == 0, cleared.stderr
    wait_for(lambda: state(demo, unit) == "completed", 120, "the unit to complete")
    lines = [(r.line, r.attempt, r.exit_code) for r in runs(demo, unit)]
    assert lines[0] == (1, 1, 0) and lines[-2:] == [(2, 2, 0), (3, 2, 0)]
    assert [line for line, attempt, _ in lines if line == 1] == [1]  # resumed at its line
    assert lock_holder(demo, "raid1") is None


def test_lock_is_exclusive_released_only_by_its_holder_and_a_leftover_of_ours_retaken(
    tmp_path: Path,
) -> None:
    """The lock file itself, as the daemon's loop uses it (one process plays the daemon)."""
    from spica_core.daemon import qfin_lock
    from spica_core.node.layout import NodeLayout

    layout = NodeLayout(tmp_path)
    lock = tmp_path / "locks" / "raid1.qfin.lock"
    assert qfin_lock.acquire(layout, "raid1", "a_qfin_T1", running=()) is None
    assert lock_record(lock).stack == "a_qfin_T1" and lock_record(lock).pid == os.getpid()
    busy = qfin_lock.acquire(layout, "raid1", "b_qfin_T1", running={"a_qfin_T1"})
    assert busy is not None and busy.alive and busy.holder == lock_record(lock)
    assert "is held by running pid" in busy.message and "(unit a_qfin_T1)" in busy.message
    assert not qfin_lock.release(layout, "raid1", "b_qfin_T1")  # not its lock
    # Left by this daemon for a unit it no longer runs: its own, taken again.
    assert qfin_lock.acquire(layout, "raid1", "b_qfin_T1", running=()) is None
    assert lock_record(lock).stack == "b_qfin_T1"
    assert qfin_lock.release(layout, "raid1", "b_qfin_T1") and not lock.exists()
    # Anyone else's lock, even a dead or unreadable one, is never taken over.
    dead = LockRecord(pid=2**22 + 7, host="elsewhere", boot_id="x", stack="c_qfin_T1")
    lock.write_text(json.dumps({"pid": dead.pid, "host": dead.host, "boot_id": dead.boot_id,
                                "stack": dead.stack}))  # fmt: skip
    busy = qfin_lock.acquire(layout, "raid1", "b_qfin_T1", running=())
    assert busy is not None and not busy.alive and busy.holder is not None
    assert not qfin_lock.release(layout, "raid1", "c_qfin_T1") and lock.exists()
    lock.write_text("{half")
    busy = qfin_lock.acquire(layout, "raid1", "b_qfin_T1", running=())
    assert busy is not None and busy.holder is None and busy.malformed == "not JSON"
    assert "holds no holder (not JSON)" in busy.message


def test_unit_record_of_a_stack(tmp_path: Path) -> None:
    from spica_core.daemon.qfin_lock import lock_partition, read_unit
    from spica_core.node.layout import NodeLayout
    from spica_core.node.protocol import UnitRecord

    layout = NodeLayout(tmp_path)
    (tmp_path / "stacks" / "u").mkdir(parents=True)
    assert read_unit(layout, "u") == (None, None)  # an ordinary unit
    (tmp_path / "stacks" / "u" / "unit.json").write_text('{"step": "qfin", "partition": "raid2"}')
    unit, why = read_unit(layout, "u")
    assert why is None and lock_partition(unit) == "raid2"
    assert lock_partition(UnitRecord(step="image", partition="raid2")) is None
    (tmp_path / "stacks" / "u" / "unit.json").write_text('{"step": 3}')
    assert read_unit(layout, "u")[1] == "'step' has the wrong type (int)"


def lock_record(path: Path) -> LockRecord:
    return LockRecord(**json.loads(path.read_text()))


def test_a_dead_lock_in_the_monitors_figures_and_the_consoles_nodes_panel(db_engine) -> None:  # type: ignore[no-untyped-def]
    """What the monitor polled is what `spica nodes` and the console show without polling:
    the dead lock goes through dbspica and is marked in red on the node's row."""
    from datetime import UTC, datetime

    from spica_core.cluster_snapshot import ClusterSnapshot, Liveness, NodeSnapshot
    from spica_core.cluster_snapshot import PartitionStatus as Part
    from spica_core.db.models import NodeFigures
    from spica_core.monitor.figures import MonitorIdentity, _node_snapshot, write_figures
    from spica_core.node.protocol import QfinLock
    from spica_tui.console.panels.nodes import running_cell

    now = datetime.now(UTC)
    holder = LockRecord(pid=4242, host="mix1", boot_id="b", stack="811001p_qfin_T0003")
    locks = (QfinLock(partition="raid2", holder=holder, alive=False),)
    snap = NodeSnapshot(
        name=NODE, host="127.0.0.1", port=22, liveness=Liveness.UP, polled_at=now,
        partitions=(Part("raid1", 100, 50, 50), Part("raid2", 100, 50, 50)), qfin_locks=locks,
    )  # fmt: skip
    with Session(db_engine) as s, s.begin():
        write_figures(s, ClusterSnapshot(now, (snap,)), MonitorIdentity("here", 1))
    with Session(db_engine) as s:
        row = s.scalars(select(NodeFigures)).one()
        read = _node_snapshot(NODE, "127.0.0.1", 22, row)
    assert read.qfin_locks == locks and read.partitions == snap.partitions
    assert read.to_json()["qfin_locks"] == [
        {"partition": "raid2", "alive": False, "pid": 4242, "host": "mix1",
         "stack": "811001p_qfin_T0003", "malformed": None},
    ]  # fmt: skip
    cell = running_cell(read, "")
    assert cell.plain == "dead QFin lock raid2" and cell.spans[-1].style == "bold red"
    assert running_cell(NodeSnapshot(name=NODE, host="h", port=22), "").plain == "-"


def test_a_stopped_daemon_gives_the_lock_back_and_the_unit_waits_pending(
    demo: DemoCluster, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    unit, started, go = "811005p_qfin_T0003", marks / "started", marks / "go"
    add_qfin(
        demo,
        {unit: ("raid2", [f"touch {shlex.quote(str(started))} && {wait_file(go)}", "echo done"])},
    )
    demo.up(daemons=True)
    wait_for(started.exists, 60, "the line to start")
    pid = daemon_pid(demo)
    assert lock_holder(demo, "raid2") is not None
    os.kill(pid, signal.SIGTERM)  # a clean stop: the line is killed after the grace
    wait_for(lambda: not demo.status().nodes[0].daemon_alive, 60, "the daemon to stop")
    assert lock_holder(demo, "raid2") is None
    assert (demo.node_root(NODE) / "queue" / f"{unit}.spica").exists()
    go.touch()
    demo.up(daemons=True)
    wait_for(lambda: state(demo, unit) == "completed", 60, "the unit to complete")
    assert problems(demo) == []


def test_stack_add_stages_a_hand_made_qfin_units_partition(tmp_path: Path, db_url: str) -> None:
    from tests.daemon_support import make_node

    env = make_node(tmp_path, db_url)
    commands = tmp_path / "commands.sh"
    commands.write_text("echo qfin\n")

    def add(name: str, *extra: str):  # type: ignore[no-untyped-def]
        return invoke_spica(
            "--config", str(env.config_path), "stack", "add", name, "--node", NODE,
            "--commands", str(commands), "--step", "qfin", *extra,
        )  # fmt: skip

    added = add("811009p_qfin_T0003", "--partition", "raid1")
    assert added.returncode == 0, added.stderr
    unit = env.stack_dir("811009p_qfin_T0003") / "unit.json"
    assert json.loads(unit.read_text()) == {"step": "qfin", "partition": "raid1"}
    plain = add("811010p_qfin_T0003")
    assert (
        plain.returncode == 0 and not (env.stack_dir("811010p_qfin_T0003") / "unit.json").exists()
    )
    hostile = add("811011p_qfin_T0003", "--partition", "../raid1")
    assert hostile.returncode == 2 and "partition" in hostile.stderr
    assert not env.stack_dir("811011p_qfin_T0003").exists()
    assert env.row("811011p_qfin_T0003") is None

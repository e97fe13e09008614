"""``spica watch`` against demo nodes over real SSH, a real SMTP server, SQLite and MariaDB.

A node killed gives one "Unable to contact" problem and one mail, its return one "back to
life" problem and one mail, however many monitors watch the same dbspica; SIGTERM stops a
monitor cleanly (exit 0, connections closed, its row marked stopped).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import Liveness
from spica_core.config import load_config
from spica_core.db.models import Monitor as MonitorRow
from spica_core.db.models import NodeFigures, Problem
from spica_core.demo.cluster import DemoCluster
from spica_core.liveness import BACK_MESSAGE, DOWN_MESSAGE
from spica_core.monitor import Monitor, MonitorIdentity, read_monitor_view
from tests.daemon_support import Mailbox, wait_for
from tests.monitor_support import mailbox_fixture, monitor_config, running_demo, start_watch


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    yield from running_demo(tmp_path_factory, "monitor", 3)


mailbox = pytest.fixture(name="mailbox")(mailbox_fixture)


def problems(engine: Engine, message: str) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).where(Problem.message == message)) or 0


def polls(engine: Engine) -> dict[int, int]:
    with Session(engine) as session:
        return {r.pid: r.polls for r in session.scalars(select(MonitorRow))}


def mails(box: Mailbox, event: str, node: str) -> list[Any]:
    return [m for m in box.messages if m["X-Spica-Event"] == event and m["X-Spica-Node"] == node]


def wait_polls(engine: Engine, pid: int, more: int) -> None:
    """Let monitor ``pid`` finish ``more`` further polls (a doubled record would show by then)."""
    start = polls(engine)[pid]
    wait_for(lambda: polls(engine)[pid] >= start + more, what=f"{more} more polls of {pid}")


def test_two_monitors_record_and_mail_each_transition_once(
    demo: DemoCluster, db_engine: Engine, db_url: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    """One monitor polls, the other stands by; the leader crashes with a node down, the
    standby takes over: still one problem row and one mail per transition."""
    config = monitor_config(demo, db_url, mailbox, tmp_path / "spica.toml")
    victim = load_config(config).nodes[1].name
    watchers = {p.pid: p for p in (start_watch(config, tmp_path / f"w{i}.log") for i in (1, 2))}
    try:
        wait_for(lambda: len(polls(db_engine)) == 2, what="both monitors registered")
        leader = wait_for(
            lambda: next((pid for pid, n in polls(db_engine).items() if n >= 2), None),
            what="one monitor polling",
        )
        (standby,) = set(watchers) - {leader}
        assert polls(db_engine)[standby] == 0  # standing by: no poll, no SSH connection

        assert demo.kill_node(victim)
        down = DOWN_MESSAGE.format(node=victim)
        wait_for(lambda: problems(db_engine, down), what="the down problem row")
        wait_for(lambda: mails(mailbox, "node-down", victim), what="the node-down mail")
        wait_polls(db_engine, leader, 3)
        assert problems(db_engine, down) == 1
        assert len(mails(mailbox, "node-down", victim)) == 1
        mail = mails(mailbox, "node-down", victim)[0]
        assert down in mail["Subject"] and mail["To"] == "teraop@example.org"

        watchers[leader].send_signal(signal.SIGKILL)  # a crash: the lease expires unreleased
        watchers[leader].wait()
        wait_for(lambda: polls(db_engine)[standby] >= 2, 90, "the standby taking over")
        assert problems(db_engine, down) == 1  # the node was recorded down already
        assert len(mails(mailbox, "node-down", victim)) == 1

        assert demo.start_node(victim)
        back = BACK_MESSAGE.format(node=victim)
        wait_for(lambda: problems(db_engine, back), what="the back-to-life problem row")
        wait_for(lambda: mails(mailbox, "back-to-life", victim), what="the back-to-life mail")
        wait_polls(db_engine, standby, 3)
        assert problems(db_engine, back) == 1
        assert problems(db_engine, down) == 1
        assert len(mails(mailbox, "back-to-life", victim)) == 1
        assert len(mailbox.messages) == 2

        watchers[standby].send_signal(signal.SIGTERM)
        code = watchers[standby].wait(timeout=30)
    finally:
        for proc in watchers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        demo.start_node(victim)
    assert code == 0
    with Session(db_engine) as session:
        stopped = {r.pid: r.stopped_at for r in session.scalars(select(MonitorRow))}
    assert stopped[leader] is None and stopped[standby] is not None
    log = next(p for p in tmp_path.glob("w*.log") if "stopped after" in p.read_text())
    assert "stands by" in log.read_text() and "holds the lease" in log.read_text()


def test_once_records_every_node_figures_and_exits(
    demo: DemoCluster, db_engine: Engine, db_url: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    config = monitor_config(demo, db_url, mailbox, tmp_path / "spica.toml")
    done = subprocess.run(
        [sys.executable, "-m", "spica_tui", "--config", str(config), "watch", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # logs go to stderr
    with Session(db_engine) as session:
        figures = {r.node: r for r in session.scalars(select(NodeFigures))}
        monitor = session.scalars(select(MonitorRow)).one()
    names = [n.name for n in load_config(config).nodes]
    assert sorted(figures) == sorted(names)
    for row in figures.values():
        assert row.liveness == Liveness.UP.value, row.last_error
        assert row.load is not None and len(row.load) == 3
        assert {p["name"] for p in row.partitions} == {"raid1", "raid2"}
        assert set(row.counts or {}) == {"pending", "running", "completed", "failed"}
        assert row.agent_version
        assert row.monitor_pid == monitor.pid and row.monitor_host == monitor.host
    assert monitor.polls == 1 and monitor.stopped_at is not None


async def test_figures_read_back_while_running_and_not_once_stopped(
    demo: DemoCluster, db_engine: Engine, db_url: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    config = load_config(monitor_config(demo, db_url, mailbox, tmp_path / "spica.toml"))
    # A running stack whose claimer is gone: its claim comes back through dbspica whole.
    node = config.nodes[0].name
    stack_dir = demo.node_root(node) / "stacks" / "figures_run"
    (stack_dir / "logs").mkdir(parents=True)
    (stack_dir / "commands.sh").write_text("true\ntrue\ntrue\n")
    (stack_dir / "progress").write_text("1\n")
    claim = demo.node_root(node) / "queue" / "figures_run.processing"
    claim.write_text(
        '{"pid": 4000000, "host": "elsewhere", "boot_id": "old", '
        '"started_at": "2026-01-01T00:00:00Z"}'
    )
    monitor = Monitor(config, db_engine, identity=MonitorIdentity("pix-console", 1234))
    task = asyncio.create_task(monitor.run())
    try:
        for _ in range(600):
            if monitor.polls >= 2:
                break
            await asyncio.sleep(0.05)
        view = read_monitor_view(db_engine, config, datetime.now(UTC))
        assert view is not None
        assert view.monitor.identity.label == "pix-console:1234"
        polled = monitor.pool.snapshot
        assert [n.name for n in view.cluster.nodes] == [n.name for n in config.nodes]
        for got in view.cluster.nodes:
            want = polled.node(got.name)
            assert got.liveness is Liveness.UP
            assert got.partitions == want.partitions
            assert got.queue_counts() == want.queue_counts()
            assert got.agent_version == want.agent_version and got.load is not None
            shown = [(e.stack, e.progress, e.lines, e.claim) for e in got.running()]
            assert shown == [(e.stack, e.progress, e.lines, e.claim) for e in want.running()]
        (running,) = view.cluster.node(node).running()
        assert running.stack == "figures_run" and running.claim is not None
        assert running.claim.pid == 4000000 and running.claim.alive is False
    finally:
        monitor.stop()
        assert await task == 0
        claim.unlink()
        shutil.rmtree(stack_dir)
    assert read_monitor_view(db_engine, config, datetime.now(UTC)) is None


def test_header_ages_the_monitor_figures_by_its_last_poll() -> None:
    """Fresh up to two monitor intervals (and a second), stale past that, never fresh once
    the monitor stopped: whatever the console's own poll time says."""
    from datetime import timedelta

    from spica_core.cluster_snapshot import ClusterSnapshot
    from spica_core.console_data import ConsoleSnapshot
    from spica_core.monitor import MonitorStatus
    from spica_tui.console.panels.header import render_header

    now = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)

    def header(silent: float, *, stopped: bool = False) -> str:
        beat = now - timedelta(seconds=silent)
        monitor = MonitorStatus(
            MonitorIdentity("pix-console", 1234), 1.0, beat, now if stopped else None
        )
        snap = ConsoleSnapshot(
            "terapix", "sqlite:///x", now, ClusterSnapshot(beat), monitor=monitor
        )
        return render_header(snap, now, interval=2.0, read_only=False).plain

    assert "monitor pix-console:1234, 3 s ago" in header(2.9)
    assert "monitor pix-console:1234 STALE: last poll 3 s ago" in header(3.1)
    assert "STALE" in header(0.5, stopped=True)


def test_watch_reports_bad_configuration_and_dbspica_away(tmp_path: Path) -> None:
    from tests.conftest import run_spica

    bad = tmp_path / "bad.toml"
    bad.write_text('[db]\nurl = "sqlite:///x.sqlite"\n[monitor]\ninterval = 0\n')
    done = run_spica("--config", str(bad), "watch", "--once")
    assert done.returncode == 2 and "monitor.interval" in done.stderr

    away = tmp_path / "away.toml"
    away.write_text('[db]\nurl = "mysql+pymysql://root@127.0.0.1:1/spica"\n')
    done = run_spica("--config", str(away), "watch", "--once")
    assert done.returncode == 3 and "dbspica unreachable" in done.stderr

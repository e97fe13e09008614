"""An older dbspica backup restored under a running daemon whose journal was compacted: the
daemon says so loudly, replays what its journal still holds, and reconcile reports the rest.

Real parts: a demo node over SSH with its daemon, a SQLite dbspica replaced by its backup.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Problem, Stack, StackRun
from spica_core.demo.cluster import DemoCluster
from tests.conftest import invoke_spica
from tests.daemon_support import wait_for

#: Enough journal for a compaction (the journal is compacted once over 256 KiB and applied).
BIG_LINES = 1000


@pytest.fixture
def demo(tmp_path: Path):
    cluster = DemoCluster(tmp_path / "cluster")
    cluster.up(1, daemons=True)
    try:
        assert invoke_spica("--config", str(cluster.config_path), "db", "init").returncode == 0
        yield cluster
    finally:
        cluster.down()


def spica(demo: DemoCluster, *args: str):
    return invoke_spica("--config", str(demo.config_path), *args)


def add(demo: DemoCluster, tmp_path: Path, name: str, commands: str) -> None:
    path = tmp_path / f"{name}.sh"
    path.write_text(commands)
    added = spica(demo, "stack", "add", name, "--node", "mix1", "--commands", str(path), "--launch")
    assert added.returncode == 0, added.stderr


def state(engine, name: str) -> str | None:
    with Session(engine) as s:
        return s.scalars(select(Stack.state).where(Stack.name == name)).one_or_none()


def journal_base(demo: DemoCluster) -> int:
    journal = demo.node_root("mix1") / "journal" / "dbspica.jsonl"
    with journal.open() as f:
        return int(json.loads(f.readline()).get("base") or 0)


def test_restored_older_dbspica_is_detected_replayed_and_reported(demo, tmp_path) -> None:
    db_file = demo.directory / "dbspica.sqlite"
    engine = make_engine(load_config(demo.config_path).db)
    try:
        add(demo, tmp_path, "first_T0001", "echo first\n")
        wait_for(lambda: state(engine, "first_T0001") == "completed", 60, "first to complete")
        backup = tmp_path / "backup.sqlite"
        with sqlite3.connect(db_file) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)

        add(demo, tmp_path, "lost_T0001", "echo lost\n")
        wait_for(lambda: state(engine, "lost_T0001") == "completed", 60, "lost to complete")
        # Its journal entries are compacted away with big's first ones.
        add(demo, tmp_path, "big_T0001", "".join(f"true {i:030d}\n" for i in range(BIG_LINES)))
        wait_for(lambda: state(engine, "big_T0001") == "completed", 180, "big to complete")
        wait_for(lambda: journal_base(demo) > 0, 30, "the journal to be compacted")
        add(demo, tmp_path, "small_T0001", "echo small\n")
        wait_for(lambda: state(engine, "small_T0001") == "completed", 60, "small to complete")

        # The restore: the daemon's writes since the backup are no longer in dbspica.
        engine.dispose()
        with sqlite3.connect(backup) as src, sqlite3.connect(db_file) as dst:
            src.backup(dst)
        assert state(engine, "lost_T0001") is None and state(engine, "small_T0001") is None
        add(demo, tmp_path, "after_T0001", "echo after\n")

        def problems() -> list[str]:
            with Session(engine) as s:
                return [
                    p.message
                    for p in s.scalars(select(Problem).where(Problem.kind == "software"))
                    if "behind the journal" in p.message
                ]

        (message,) = wait_for(problems, 60, "the daemon to report dbspica behind its journal")
        assert "mix1" in message and "compacted away" in message and "lost" in message
        log = (demo.directory / "logs" / "mix1.daemon.log").read_text()
        assert "dbspica is behind the journal of node mix1" in log
        # What the journal still held is replayed again: small is back, with its run.
        wait_for(lambda: state(engine, "small_T0001") == "completed", 60, "small replayed")
        wait_for(lambda: state(engine, "after_T0001") == "completed", 60, "after to complete")
        with Session(engine) as s:
            runs = s.scalars(
                select(StackRun.exit_code)
                .join(Stack, StackRun.stack_id == Stack.id)
                .where(Stack.name == "small_T0001")
            ).all()
        assert runs == [0]
        assert state(engine, "lost_T0001") is None  # compacted away: lost to dbspica

        report = spica(demo, "reconcile", "--json")
        assert report.returncode == 1, report.stdout + report.stderr
        found = {(d["kind"], d["stack"]) for d in json.loads(report.stdout)["drift"]}
        assert ("journal-behind", None) in found
        assert ("orphan-queue-file", "lost_T0001") in found
        text = spica(demo, "reconcile")
        assert "journal-behind" in text.stdout and "behind the journal" in text.stdout

        fixed = spica(demo, "reconcile", "--fix", "--yes")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert state(engine, "lost_T0001") == "completed"
        assert state(engine, "big_T0001") == "completed"
        again = spica(demo, "reconcile", "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["drift"] == []
    finally:
        engine.dispose()

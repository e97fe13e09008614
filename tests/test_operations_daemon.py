"""Requeue from the command line, resumed by a real daemon on a demo node."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Stack, StackRun
from spica_core.demo.cluster import DemoCluster
from tests.conftest import invoke_spica
from tests.daemon_support import wait_for


@pytest.fixture
def demo(tmp_path):
    cluster = DemoCluster(tmp_path / "cluster")
    cluster.up(1, daemons=True)
    try:
        yield cluster
    finally:
        cluster.down()


def test_requeue_resumes_at_the_failed_line_and_completes(demo: DemoCluster, tmp_path) -> None:
    fixed = tmp_path / "fixed"
    commands = tmp_path / "commands.sh"
    commands.write_text(f"echo one\necho two\ntest -f {fixed}\necho four\n")
    env = {"SPICA_CONFIG": str(demo.config_path)}
    assert invoke_spica("db", "init", env=env).returncode == 0
    added = invoke_spica(
        "stack",
        "add",
        "resume_T0003",
        "--node",
        "mix1",
        "--commands",
        str(commands),
        "--launch",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    engine = make_engine(load_config(demo.config_path).db)

    def state() -> str | None:
        with Session(engine) as s:
            return s.scalars(select(Stack.state).where(Stack.name == "resume_T0003")).one()

    wait_for(lambda: state() == "failed", 60, "the stack to fail at line 3")
    logs = demo.node_root("mix1") / "stacks" / "resume_T0003" / "logs"
    before = {n: (logs / n).stat().st_mtime_ns for n in ("001.log", "002.log")}
    failed = json.loads(invoke_spica("stacks", "--state", "failed", "--json", env=env).stdout)
    assert [(s["name"], s["failed_line"]) for s in failed] == [("resume_T0003", 3)]

    fixed.write_text("ok")
    requeued = invoke_spica("requeue", "resume_T0003", "--yes", env=env)
    assert requeued.returncode == 0, requeued.stderr
    assert "resumes at line 3" in requeued.stderr
    wait_for(lambda: state() == "completed", 60, "the requeued stack to complete")

    assert {n: (logs / n).stat().st_mtime_ns for n in before} == before
    with Session(engine) as s:
        stack = s.scalars(select(Stack).where(Stack.name == "resume_T0003")).one()
        runs = s.scalars(select(StackRun).where(StackRun.stack_id == stack.id)).all()
    lines = sorted((r.line, r.attempt, r.exit_code) for r in runs)
    assert lines == [(1, 1, 0), (2, 1, 0), (3, 1, 1), (3, 2, 0), (4, 2, 0)]
    engine.dispose()

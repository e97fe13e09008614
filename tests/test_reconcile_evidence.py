"""Unfinished operator actions and unreachable nodes, end to end: the real CLI, demo nodes
over SSH, real daemons, crashes at fault points and node servers killed mid-call."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import OperatorAction, Stack, StackRun
from spica_core.demo.cluster import DemoCluster
from tests.conftest import invoke_spica, run_spica
from tests.daemon_support import plant_failed, wait_for


@contextlib.contextmanager
def _cluster(directory: Path, nodes: int, daemons: bool) -> Iterator[DemoCluster]:
    cluster = DemoCluster(directory)
    cluster.up(nodes, daemons=daemons)
    try:
        assert invoke_spica("--config", str(cluster.config_path), "db", "init").returncode == 0
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def demo(tmp_path: Path):
    """One node with its daemon."""
    with _cluster(tmp_path / "cluster", 1, True) as cluster:
        yield cluster


@pytest.fixture
def bare(tmp_path: Path):
    """Two nodes without daemons: nothing moves a queue file but the test."""
    with _cluster(tmp_path / "bare", 2, False) as cluster:
        yield cluster


def engine_of(cluster: DemoCluster):
    return make_engine(load_config(cluster.config_path).db)


@pytest.fixture
def engine(demo: DemoCluster):
    e = engine_of(demo)
    yield e
    e.dispose()


@pytest.fixture
def bare_engine(bare: DemoCluster):
    e = engine_of(bare)
    yield e
    e.dispose()


def spica(config: Path, *args: str, **kw):
    """``spica`` in this process (over real SSH to the demo's nodes all the same)."""
    return invoke_spica("--config", str(config), *args, **kw)


def db_state(engine, name: str) -> str | None:
    with Session(engine) as s:
        return s.scalars(select(Stack.state).where(Stack.name == name)).one_or_none()


def queue_files(demo: DemoCluster, node: str, name: str) -> list[str]:
    queue = demo.node_root(node) / "queue"
    return sorted(p.name for p in queue.iterdir() if p.name.startswith(name + "."))


def intents(engine, name: str, action: str = "requeue") -> list[OperatorAction]:
    with Session(engine) as s:
        rows = s.scalars(select(OperatorAction).where(OperatorAction.action == action)).all()
    return [r for r in rows if r.targets == [name] and not r.dry_run]


def add_failing_stack(demo: DemoCluster, engine, tmp_path: Path, name: str, line2: str) -> None:
    """A stack run by the node's daemon until it fails at line 2."""
    commands = tmp_path / f"{name}.sh"
    commands.write_text(f"echo one\n{line2}\n")
    added = spica(
        demo.config_path, "stack", "add", name, "--node", "mix1", "--commands", str(commands)
    )
    assert added.returncode == 0, added.stderr
    assert spica(demo.config_path, "launch", name, "--yes").returncode == 0
    wait_for(lambda: db_state(engine, name) == "failed", 60, f"{name} to fail")


def crash(config: Path, point: str, action: str, name: str) -> None:
    """``spica ACTION NAME --yes`` killed at the fault point ``point`` (a real crash)."""
    crashed = run_spica(
        "--config", str(config), action, name, "--yes", env={"SPICA_FAULT_POINT": point}
    )
    assert crashed.returncode == 70, crashed.stderr


def drift_of(config: Path, name: str) -> list[dict]:
    report = spica(config, "reconcile", "--json")
    return [d for d in json.loads(report.stdout)["drift"] if d["stack"] == name]


# ------------------------------------------------------- fault 6: evidence, not state


def test_requeue_that_reached_the_node_and_ran_again_is_finished_not_rolled_back(
    demo, engine, tmp_path
) -> None:
    fixed = tmp_path / "fixed"
    # Fails again after the requeue (failed, as before it), and one that completes.
    add_failing_stack(demo, engine, tmp_path, "again_T0003", "false")
    add_failing_stack(demo, engine, tmp_path, "cured_T0003", f"test -f {fixed}")
    add_failing_stack(demo, engine, tmp_path, "never_T0003", "false")
    fixed.write_text("ok")
    # A launch crashed the same way (planned: no claim counter on the node yet).
    commands = tmp_path / "fresh.sh"
    commands.write_text("echo fresh\n")
    added = spica(
        demo.config_path,
        "stack",
        "add",
        "fresh_T0003",
        "--node",
        "mix1",
        "--commands",
        str(commands),
    )
    assert added.returncode == 0, added.stderr
    crash(demo.config_path, "after-node-commit", "launch", "fresh_T0003")
    for name in ("again_T0003", "cured_T0003"):
        crash(demo.config_path, "after-node-commit", "requeue", name)
    # A crash before the node was asked: that requeue truly never happened.
    crash(demo.config_path, "after-intent", "requeue", "never_T0003")
    attempt = demo.node_root("mix1") / "stacks" / "again_T0003" / "attempt"
    wait_for(
        lambda: (
            attempt.read_text().strip() == "2"
            and queue_files(demo, "mix1", "again_T0003") == ["again_T0003.error"]
            and db_state(engine, "again_T0003") == "failed"
            and queue_files(demo, "mix1", "cured_T0003") == ["cured_T0003.processed"]
            and db_state(engine, "cured_T0003") == "completed"
            and db_state(engine, "fresh_T0003") == "completed"
        ),
        60,
        "the daemon to run both requeued stacks again",
    )

    for name in ("again_T0003", "cured_T0003"):
        (found,) = drift_of(demo.config_path, name)
        assert found["kind"] == "unfinished-action"
        assert found["fix"].startswith("finish it"), found
        assert "attempt 2" in found["fix"], found
    (fresh,) = drift_of(demo.config_path, "fresh_T0003")
    assert fresh["fix"].startswith("finish it") and "attempt 1" in fresh["fix"], fresh
    (never,) = drift_of(demo.config_path, "never_T0003")
    assert never["fix"].startswith("roll it back"), never

    fixed_run = spica(demo.config_path, "reconcile", "--fix", "--yes", "--json")
    assert fixed_run.returncode == 0, fixed_run.stdout + fixed_run.stderr
    for name, state in (("again_T0003", "failed"), ("cured_T0003", "completed")):
        (row,) = intents(engine, name)
        assert row.result == "applied", row.detail
        assert "rolled back" not in row.detail["message"]
        assert db_state(engine, name) == state
    (row,) = intents(engine, "fresh_T0003", "launch")
    assert row.result == "applied", row.detail
    assert db_state(engine, "fresh_T0003") == "completed"
    (row,) = intents(engine, "never_T0003")
    assert row.result == "failed" and "rolled back" in row.detail["message"]
    assert queue_files(demo, "mix1", "never_T0003") == ["never_T0003.error"]
    with Session(engine) as s:
        runs = s.scalars(
            select(StackRun.attempt)
            .join(Stack, StackRun.stack_id == Stack.id)
            .where(Stack.name == "again_T0003", StackRun.line == 2)
        ).all()
    assert sorted(runs) == [1, 2]
    assert drift_of(demo.config_path, "again_T0003") == []
    assert drift_of(demo.config_path, "never_T0003") == []


# ------------------------------------------------- fault 7: sent, but no answer came


def slow_config(demo: DemoCluster, name: str, seconds: float, call_timeout: float = 10) -> Path:
    """The demo's configuration with agents that answer a move only after ``seconds``."""
    text = demo.config_path.read_text()
    agent = 'agent_command = "'
    assert agent in text
    text = text.replace(
        agent, f"{agent}env SPICA_FAULT_POINT=agent-slow-answer SPICA_FAULT_SECONDS={seconds} "
    )
    text = text.replace("[ssh]\n", f"[ssh]\ncall_timeout = {call_timeout}\n", 1)
    path = demo.directory / name
    path.write_text(text)
    return path


def requeue_outcome_unknown(demo: DemoCluster, engine, config: Path, name: str, kill: bool):
    """Requeue ``name`` of mix2 in a process of its own; its exit code, stdout, stderr."""
    command = [sys.executable, "-m", "spica_tui", "--config", str(config)]
    proc = subprocess.Popen(
        [*command, "requeue", name, "--yes", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if kill:
            wait_for(
                lambda: queue_files(demo, "mix2", name) == [f"{name}.spica"],
                60,
                "the node's commit rename",
            )
            assert demo.kill_node("mix2")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def make_failed(demo: DemoCluster, engine, name: str) -> None:
    """A failed stack on mix2 as a daemon leaves it."""
    from spica_core.db.models import Node

    plant_failed(demo.node_root("mix2"), name)
    with Session(engine) as s, s.begin():
        node = s.scalars(select(Node).where(Node.name == "mix2")).one()
        s.add(Stack(name=name, node=node, state="failed", lines=2, failed_line=2))


@pytest.mark.parametrize("how", ["server-killed", "call-timeout"])
def test_answer_lost_after_the_commit_is_unknown_and_left_to_reconcile(
    bare, bare_engine, how
) -> None:
    demo, engine = bare, bare_engine
    name = f"lost_{how.replace('-', '_')}"
    make_failed(demo, engine, name)
    if how == "server-killed":
        config = slow_config(demo, "slow.toml", seconds=8)
    else:
        config = slow_config(demo, "slow.toml", seconds=6, call_timeout=2)
    code, out, err = requeue_outcome_unknown(demo, engine, config, name, how == "server-killed")
    assert code == 3, out + err
    (result,) = json.loads(out)["results"]
    assert result["outcome"] == "unknown", result
    assert result["ok"] is False
    assert "outcome unknown" in result["message"] and "spica reconcile" in result["message"]
    assert "failed" not in result["message"]
    assert queue_files(demo, "mix2", name) == [f"{name}.spica"]  # the node did rename
    (row,) = intents(engine, name)
    assert row.result == "pending", row.detail
    assert db_state(engine, name) == "failed"
    if how == "server-killed":
        demo.start_node("mix2")
    (found,) = drift_of(demo.config_path, name)
    assert found["fix"].startswith("finish it"), found
    fixed = spica(demo.config_path, "reconcile", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    (row,) = intents(engine, name)
    assert row.result == "applied"
    assert db_state(engine, name) == "pending"


# -------------------------------------------- fault 8: a node reconcile cannot ask


def bad_host_key_config(demo: DemoCluster, node: str) -> Path:
    """The demo's configuration with a known_hosts where ``node`` has another key."""
    import asyncssh

    port = demo._state().node(node).port
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    lines = [
        f"[127.0.0.1]:{port} {other}" if line.startswith(f"[127.0.0.1]:{port} ") else line
        for line in demo.known_hosts_path.read_text().splitlines()
    ]
    (demo.directory / "known_hosts.bad").write_text("\n".join(lines) + "\n")
    path = demo.directory / "badkey.toml"
    path.write_text(
        demo.config_path.read_text().replace(
            'known_hosts = "known_hosts"', 'known_hosts = "known_hosts.bad"'
        )
    )
    return path


def test_reconcile_reports_a_node_it_cannot_reach_and_exits_3(bare) -> None:
    demo = bare
    clean = spica(demo.config_path, "reconcile", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["drift"] == []

    badkey = bad_host_key_config(demo, "mix1")
    report = spica(badkey, "reconcile", "--json")
    assert report.returncode == 3, report.stdout + report.stderr
    (found,) = json.loads(report.stdout)["drift"]
    assert (found["kind"], found["node"]) == ("node-unchecked", "mix1")
    assert "host key" in found["detail"]

    demo.kill_node("mix2")
    text = spica(demo.config_path, "reconcile")
    assert text.returncode == 3, text.stdout + text.stderr
    assert "no drift" not in text.stdout
    assert "node-unchecked" in text.stdout and "mix2" in text.stdout
    fix = spica(demo.config_path, "reconcile", "--fix", "--yes", "--json")
    assert fix.returncode == 3
    kinds = {(d["kind"], d["node"]) for d in json.loads(fix.stdout)["drift"]}
    assert kinds == {("node-unchecked", "mix2")}


# ------------------------------------------- a host-key mismatch is a security event


def test_host_key_mismatch_is_filed_as_a_security_problem(bare) -> None:
    from spica_tui.console.panels.problems import problem_style

    demo = bare
    badkey = bad_host_key_config(demo, "mix1")
    for _ in range(2):  # filed once while it is open, however often it is polled
        polled = spica(badkey, "nodes", "--json")
        assert polled.returncode == 3, polled.stderr
    demo.kill_node("mix2")
    assert spica(demo.config_path, "nodes").returncode == 3
    problems = json.loads(spica(demo.config_path, "problems", "--json").stdout)
    mine = [(p["kind"], p["node"], p["message"]) for p in problems]
    assert [m for m in mine if m[0] == "security"] == [
        ("security", "mix1", problems[-1]["message"])
    ], mine
    # Not an outage: no "Unable to contact" for mix1 (its good key answers: back to life).
    assert ("hardware", "mix1", "Unable to contact mix1 via ssh") not in mine, mine
    assert ("hardware", "mix2", "Unable to contact mix2 via ssh") in mine, mine
    (security,) = [p for p in problems if p["kind"] == "security"]
    assert "host key" in security["message"] and "mix1" in security["message"]
    only = spica(demo.config_path, "problems", "--kind", "security", "--json")
    assert only.returncode == 0, only.stderr
    assert [p["id"] for p in json.loads(only.stdout)] == [security["id"]]
    hardware = next(p for p in problems if p["node"] == "mix2")
    assert problem_style(security) not in (problem_style(hardware), "")


# -------------------------------------------- spica nodes: last seen of a down node


def test_nodes_shows_when_a_down_node_was_last_seen(bare) -> None:
    demo = bare
    assert spica(demo.config_path, "nodes").returncode == 0  # recorded as seen
    recorded = json.loads(spica(demo.config_path, "nodes", "--recorded", "--json").stdout)
    seen = {n["name"]: n["last_seen"] for n in recorded}
    assert seen["mix2"] is not None
    demo.kill_node("mix2")
    live = spica(demo.config_path, "nodes", "--json")
    assert live.returncode == 3
    mix2 = next(n for n in json.loads(live.stdout) if n["name"] == "mix2")
    assert mix2["status"] == "down"
    assert mix2["last_seen"] is not None
    assert mix2["last_seen"][:19] == seen["mix2"][:19]
    text = spica(demo.config_path, "nodes")
    (row,) = [line for line in text.stdout.splitlines() if line.startswith("mix2")]
    assert "never" not in row and "ago" in row


# ------------------------------ orphans: rows rebuilt from the node's records


def test_orphan_queue_files_are_registered_with_what_their_records_hold(bare) -> None:
    queue = bare.node_root("mix1") / "queue"
    (queue / "lost_failed.error").write_text(
        json.dumps({"line": 3, "exit_code": 2, "message": "Failed on swarp - Code 2 - Line 3"})
    )
    (queue / "lost_pending.spica").write_text(
        json.dumps(
            {
                "stack": "lost_pending",
                "priority": 7,
                "launched_at": "2026-01-01T00:00:00.000Z",
                "by": "alice",
            }
        )
    )
    fixed = spica(bare.config_path, "reconcile", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    engine = engine_of(bare)
    try:
        with Session(engine) as s:
            rows = {r.name: r for r in s.scalars(select(Stack))}
            failed, pending = rows["lost_failed"], rows["lost_pending"]
            assert (failed.state, failed.failed_line, failed.exit_code) == ("failed", 3, 2)
            assert failed.error == "Failed on swarp - Code 2 - Line 3"
            assert (pending.state, pending.priority) == ("pending", 7)
    finally:
        engine.dispose()

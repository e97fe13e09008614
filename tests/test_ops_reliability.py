"""Operator actions against what an on-call night does: a daemon killed mid-line, operators
racing each other, an agent dying between its two renames. Real daemons, real agents (over
SSH on the demo cluster, or ``spica node serve`` processes), real dbspica."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Node, OperatorAction, Stack, StackRun
from spica_core.demo.cluster import DemoCluster
from tests.conftest import invoke_spica
from tests.daemon_support import wait_for

#: Bounds of the race loops: rounds, and seconds after which a loop stops early.
ROUNDS = 50
RACE_SECONDS = 120.0


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def demo(tmp_path: Path):
    cluster = DemoCluster(tmp_path / "cluster")
    cluster.up(1, daemons=True)
    assert invoke_spica("--config", str(cluster.config_path), "db", "init").returncode == 0
    try:
        yield cluster
    finally:
        cluster.down()


def _runs(engine, stack: str) -> list[tuple[int, int, int | None, bool]]:
    with Session(engine) as s:
        rows = s.execute(
            select(StackRun.line, StackRun.attempt, StackRun.exit_code, StackRun.ended_at)
            .join(Stack)
            .where(Stack.name == stack)
            .order_by(StackRun.attempt, StackRun.line)
        ).all()
    return [(line, attempt, code, ended is not None) for line, attempt, code, ended in rows]


# ------------------------------------------------------------------ unlock and its orphan


def _orphaned(demo: DemoCluster, tmp_path: Path, stack: str) -> int:
    """A stack whose daemon was killed -9 while line 2 (a 12 s sleep, then a trace line
    naming its attempt) runs; the orphan line's pid (its process group)."""
    commands = tmp_path / "commands.sh"
    commands.write_text(
        "true\nsleep 12; echo B2-attempt$SPICA_ATTEMPT >> $SPICA_ROOT/trace\ntrue\n"
    )
    added = invoke_spica(
        *("--config", str(demo.config_path), "stack", "add", stack, "--node", "mix1"),
        *("--commands", str(commands), "--launch"),
    )
    assert added.returncode == 0, added.stderr
    running = demo.node_root("mix1") / "stacks" / stack / "running.json"

    def line_two() -> dict[str, Any] | None:
        try:
            record = json.loads(running.read_text())
        except (OSError, ValueError):
            return None
        return record if record["line"] == 2 else None

    orphan = wait_for(line_two, 60, "line 2 to run")["pid"]
    engine = make_engine(load_config(demo.config_path).db)
    wait_for(lambda: (2, 1, None, False) in _runs(engine, stack), 30, "line 2's stack_run row")
    engine.dispose()
    daemon = demo.status().nodes[0].daemon_pid
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # started by this process: reap it
        os.waitpid(daemon, 0)
    wait_for(lambda: not _alive(daemon), 10, "the daemon to die")
    assert _alive(orphan)
    return orphan


def test_unlock_kills_the_orphan_line_before_the_stack_runs_again(
    demo: DemoCluster, tmp_path: Path
) -> None:
    stack = "orphan_T0003"
    root = demo.node_root("mix1")
    env = {"SPICA_CONFIG": str(demo.config_path)}
    orphan = _orphaned(demo, tmp_path, stack)
    engine = make_engine(load_config(demo.config_path).db)

    dry = invoke_spica("unlock", stack, "--requeue", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"kill orphan line 2 (process group {orphan}, attempt 1)" in dry.stdout, dry.stdout
    assert "sleep 12; echo B2-attempt" in dry.stdout
    unlocked = invoke_spica("unlock", stack, "--requeue", "--yes", env=env)
    assert unlocked.returncode == 0, unlocked.stderr
    assert f"kill orphan line 2 (process group {orphan}" in unlocked.stderr
    # The daemon is down: nothing can have started the stack again, and the orphan is dead.
    assert not _alive(orphan)
    assert not (root / "stacks" / stack / "running.json").exists()
    assert (2, 1, 137, True) in _runs(engine, stack)

    demo.up(1, daemons=True)
    with Session(engine) as s:

        def state() -> str:
            s.expire_all()
            return s.scalars(select(Stack.state).where(Stack.name == stack)).one()

        wait_for(lambda: state() == "completed", 60, "the stack to complete")
    assert (root / "trace").read_text() == "B2-attempt2\n"
    assert _runs(engine, stack) == [
        (1, 1, 0, True),
        (2, 1, 137, True),
        (2, 2, 0, True),
        (3, 2, 0, True),
    ]
    engine.dispose()


def test_reconcile_fix_of_a_stale_claim_kills_its_orphan_line(
    demo: DemoCluster, tmp_path: Path
) -> None:
    stack = "stale_orphan_T0003"
    orphan = _orphaned(demo, tmp_path, stack)
    fixed = invoke_spica("--config", str(demo.config_path), "reconcile", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert not _alive(orphan)
    assert (demo.node_root("mix1") / "queue" / f"{stack}.error").exists()
    engine = make_engine(load_config(demo.config_path).db)
    assert (2, 1, 137, True) in _runs(engine, stack)
    engine.dispose()
    time.sleep(0.5)
    assert not (demo.node_root("mix1") / "trace").exists()


def test_end_dead_runs_closes_only_the_dead_attempts_open_rows(db_engine) -> None:
    from datetime import UTC, datetime

    from spica_core.db.runs import end_dead_runs

    started = datetime(2026, 12, 1, tzinfo=UTC)
    ended = datetime(2026, 12, 2, tzinfo=UTC)
    with Session(db_engine) as s, s.begin():
        stack = Stack(name="dead_T0003", state="running")
        s.add(stack)
        s.flush()
        for line, attempt, end, code in [
            (1, 1, started, 0),
            (2, 1, None, None),
            (3, 1, None, None),
            (2, 2, None, None),
        ]:
            s.add(
                StackRun(
                    stack_id=stack.id,
                    line=line,
                    attempt=attempt,
                    command="x",
                    started_at=started,
                    ended_at=end,
                    exit_code=code,
                )
            )
        s.flush()
        assert end_dead_runs(s, stack.id, 1, 2, 137, ended) == 2
    with Session(db_engine) as s:
        rows = s.execute(
            select(StackRun.line, StackRun.attempt, StackRun.ended_at, StackRun.exit_code).order_by(
                StackRun.attempt, StackRun.line
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, 1, started, 0),
        (2, 1, ended, 137),
        (3, 1, ended, None),
        (2, 2, None, None),
    ]


# ------------------------------------------------------------------ requeue --from-start race


class _Agent:
    """``spica node serve`` in a subprocess; requests are sent and answered separately, so
    two agents can be given a request at the same moment."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spica_tui", "node", "serve", "--root", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._id = 0
        assert "hello" in self.read()

    def send(self, verb: str, args: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self._id += 1
        request = {"id": self._id, "verb": verb, "args": args}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_a_losing_requeue_from_start_never_rewinds_the_winner(tmp_path: Path) -> None:
    root = tmp_path / "root"
    stack = "rewind_T0003"
    for sub in ("queue", f"stacks/{stack}"):
        (root / sub).mkdir(parents=True)
    (root / "stacks" / stack / "commands.sh").write_text("true\ntrue\ntrue\nfalse\ntrue\n")
    agents = [_Agent(root), _Agent(root)]
    error = root / "queue" / f"{stack}.error"
    progress = root / "stacks" / stack / "progress"
    wins = {"plain": 0, "from_start": 0}
    deadline = time.monotonic() + RACE_SECONDS
    try:
        for round_ in range(ROUNDS):
            if time.monotonic() > deadline:
                break
            (root / "queue" / f"{stack}.spica").unlink(missing_ok=True)
            progress.write_text("3\n")
            error.write_text(json.dumps({"line": 4, "exit_code": 1, "message": "Failed"}))
            order = [0, 1] if round_ % 2 else [1, 0]
            for i in order:
                agents[i].send(
                    "requeue",
                    {"stack": stack, "by": ("alice", "bob")[i], "from_start": i == 1},
                )
            plain, from_start = (a.read() for a in agents)
            assert [plain["ok"], from_start["ok"]].count(True) == 1, (plain, from_start)
            if plain["ok"]:
                wins["plain"] += 1
                assert progress.read_text().strip() == "3", f"round {round_}: {from_start}"
                assert "by alice at" in from_start["error"]["message"], from_start
            else:
                wins["from_start"] += 1
                assert progress.read_text().strip() == "0", f"round {round_}"
                assert "by bob at" in plain["error"]["message"], plain
    finally:
        for agent in agents:
            agent.close()
    assert wins["plain"] > 0, wins


# ------------------------------------------------------------------ remove against remove


class _Operator:
    """A real process planning and applying through the operations API (tests.ops_worker)."""

    def __init__(self, config: Path, user: str) -> None:
        self.user = user
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ops_worker", str(config), user],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.read() == {"ready": True}

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"worker {self.user} died"
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _failed_stack(root: Path, engine, name: str) -> None:
    (root / "stacks" / name).mkdir(parents=True)
    (root / "stacks" / name / "commands.sh").write_text("true\n")
    (root / "queue" / f"{name}.error").write_text(
        json.dumps({"line": 1, "exit_code": 2, "message": "Failed on x - Code 2 - Line 1"})
    )
    with Session(engine) as s, s.begin():
        node = s.scalars(select(Node).where(Node.name == "mix1")).one()
        s.add(Stack(name=name, node=node, state="failed", lines=1))


def test_remove_against_remove_has_one_winner_and_the_loser_is_told(
    demo: DemoCluster,
) -> None:
    demo.down()  # no daemon: nothing but the two operators touches the stacks
    demo.up(1, daemons=False)
    engine = make_engine(load_config(demo.config_path).db)
    root = demo.node_root("mix1")
    operators = [_Operator(demo.config_path, "alice"), _Operator(demo.config_path, "bob")]
    deadline = time.monotonic() + RACE_SECONDS
    rounds = 0
    try:
        for round_ in range(ROUNDS):
            if time.monotonic() > deadline:
                break
            rounds += 1
            name = f"gone_{round_}_T0003"
            _failed_stack(root, engine, name)
            for op in operators if round_ % 2 else operators[::-1]:
                op.send(f"remove {name}")
            results = [op.read()["results"][0] for op in operators]
            outcomes = sorted(r["outcome"] for r in results)
            assert outcomes == ["applied", "refused"], (round_, results)
            winner = operators[[r["outcome"] for r in results].index("applied")].user
            loser = next(r for r in results if r["outcome"] == "refused")
            assert f"removed by {winner} at" in loser["message"], (round_, loser)
            with Session(engine) as s:
                applied = [
                    row
                    for row in s.scalars(
                        select(OperatorAction).where(
                            OperatorAction.action == "remove", OperatorAction.result == "applied"
                        )
                    )
                    if row.targets == [name]
                ]
            assert len(applied) == 1, (round_, results)
            assert not (root / "stacks" / name).exists()
    finally:
        for op in operators:
            op.close()
        engine.dispose()
    assert rounds >= 5


def test_remove_then_remove_again_from_the_cli_names_who_removed_it(demo: DemoCluster) -> None:
    engine = make_engine(load_config(demo.config_path).db)
    _failed_stack(demo.node_root("mix1"), engine, "twice_T0003")
    config = ("--config", str(demo.config_path))
    first = invoke_spica(*config, "remove", "twice_T0003", "--yes", "--as", "alice")
    assert first.returncode == 0, first.stderr
    again = invoke_spica(*config, "remove", "twice_T0003", "--yes", "--as", "bob")
    assert again.returncode == 1, again.stderr
    assert "removed by alice at" in again.stderr
    engine.dispose()


# ------------------------------------------------------------------ an agent dead mid-move


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_move_left_half_done_is_listed_then_finished_or_undone_by_the_daemon(
    tmp_path: Path, sqlite_url: str
) -> None:
    from spica_core.node.agent import Agent
    from tests.daemon_support import Daemons, make_node

    env = make_node(tmp_path, sqlite_url)
    done, undone = "moved_T0003", "unmoved_T0003"
    for stack in (done, undone):
        env.add(stack, ["echo ran-$SPICA_STACK >> ../../trace"], launch=False)
    pid = _dead_pid()
    error = {"line": 1, "exit_code": 1, "message": "Failed on x - Code 1 - Line 1"}
    launch = {"stack": done, "priority": 0, "launched_at": "2026-12-01T00:00:00Z", "by": "bob"}
    # A requeue's agent died after writing the launch record, another's before it.
    (env.queue / f".{done}.error.{pid}.moving").write_text(json.dumps(launch))
    (env.queue / f".{undone}.error.{pid}.moving").write_text(json.dumps(error))

    agent = Agent(env.root)
    listing = json.loads(
        agent.respond(json.dumps({"id": 1, "verb": "status", "args": {}}).encode())
    )
    seen = {e["stack"]: e for e in listing["result"]["queue"]}
    assert seen[done]["state"] == "pending" and "interrupted move" in seen[done]["malformed"]
    assert seen[undone]["state"] == "failed" and "interrupted move" in seen[undone]["malformed"]
    # Not taken for absent by an action either: no remove of a stack half-way moved.
    refused = json.loads(
        agent.respond(json.dumps({"id": 2, "verb": "remove", "args": {"stack": undone}}).encode())
    )
    assert refused["error"]["code"] == "wrong_state", refused
    assert "interrupted move" in refused["error"]["message"]

    daemons = Daemons()
    try:
        daemons.start(env)
        wait_for(lambda: env.state(done) == "processed", 30, "the finished move to run")
        wait_for(lambda: env.state(undone) == "error", 30, "the undone move to be failed again")
    finally:
        daemons.kill_all()
    assert (env.root / "trace").read_text() == f"ran-{done}\n"
    assert not list(env.queue.glob(".*.moving"))
    assert json.loads((env.queue / f"{undone}.error").read_text()) == error

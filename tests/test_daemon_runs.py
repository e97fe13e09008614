"""The node daemon as a real process: failure and resume, mail, kill -9, SIGTERM, two daemons.

Each test runs ``spica daemon`` in a subprocess on a node root in tmp_path, with a SQLite
dbspica and (where mail matters) a real SMTP server on loopback.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.db.models import Stack, StackRun
from spica_core.node.protocol import ErrorRecord
from spica_core.node.records import read_record
from tests.daemon_support import (
    Daemons,
    Mailbox,
    NodeEnv,
    daemon_processes,
    make_node,
    smtp_mailbox,
    wait_for,
)


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    yield from daemon_processes()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    yield from smtp_mailbox()


def _trace(env: NodeEnv) -> list[str]:
    path = env.root / "trace"
    return path.read_text().split() if path.exists() else []


def _log_identity(env: NodeEnv, stack: str, line: int) -> tuple[int, int, bytes]:
    path = env.stack_dir(stack) / "logs" / f"{line:03d}.log"
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def test_a_failed_line_mails_and_a_requeue_resumes_there(
    tmp_path: Path, sqlite_url: str, daemons: Daemons, mailbox: Mailbox
) -> None:
    env = make_node(tmp_path, sqlite_url, smtp_port=mailbox.port)
    stack = "CFHTLS_W_r_021410-041200_T0003"
    env.add(
        stack,
        [
            "echo line1 >> ../../trace",
            "echo line2 >> ../../trace",
            "echo line3 >> ../../trace; echo checking the fix; test -e ../../fixed",
            "echo line4 >> ../../trace",
            "echo line5 >> ../../trace",
        ],
        runid="03AL01",
        filter="r",
    )
    daemons.start(env)
    wait_for(lambda: env.state(stack) == "error", what="the stack to fail")

    record, why = read_record(env.queue / f"{stack}.error", ErrorRecord)
    assert why is None and record is not None
    assert (record.line, record.exit_code) == (3, 1)
    assert "Line 3" in record.message and "test -e ../../fixed" in record.message
    assert "checking the fix" in (record.log_tail or "")
    assert _trace(env) == ["line1", "line2", "line3"]
    assert (env.stack_dir(stack) / "progress").read_text().strip() == "2"

    wait_for(lambda: env.row(stack).state == "failed", what="dbspica to record the failure")
    row = env.row(stack)
    assert (row.failed_line, row.exit_code, row.progress) == (3, 1, 2)
    problems = env.problems(stack)
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.kind, problem.node, problem.runid, problem.filter, problem.release) == (
        "software",
        "mix1",
        "03AL01",
        "r",
        "T0003",
    )
    assert "Line 3" in problem.message
    assert env.runs(stack) == [(1, 1, 0), (2, 1, 0), (3, 1, 1)]

    message = wait_for(lambda: mailbox.messages, what="the Teraop mail")[0]
    assert stack in message["Subject"] and "mix1" in message["Subject"]
    assert "line 3" in message["Subject"]
    assert message["To"] == "teraop@terapix.test"
    assert "checking the fix" in message.get_payload()

    kept = [_log_identity(env, stack, n) for n in (1, 2)]
    (env.root / "fixed").touch()
    os.rename(env.queue / f"{stack}.error", env.queue / f"{stack}.spica")  # the seed's way
    wait_for(lambda: env.state(stack) == "processed", what="the requeued stack to complete")

    assert _trace(env) == ["line1", "line2", "line3", "line3", "line4", "line5"]
    assert [_log_identity(env, stack, n) for n in (1, 2)] == kept
    wait_for(lambda: env.row(stack).state == "completed", what="dbspica: completed")
    assert env.runs(stack) == [(1, 1, 0), (2, 1, 0), (3, 1, 1), (3, 2, 0), (4, 2, 0), (5, 2, 0)]
    assert env.row(stack).progress == 5
    assert len(mailbox.messages) == 1 and len(env.problems(stack)) == 1


def test_kill_9_during_a_line_resumes_there_and_kills_the_orphan(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    env = make_node(tmp_path, sqlite_url)
    stack = "805282p_V0003"
    env.add(
        stack,
        [
            "echo 1 >> ../../trace",
            "echo 2 >> ../../trace; [ -e ../../go ] || sleep 60",
            "echo 3 >> ../../trace",
        ],
    )
    first = daemons.start(env)
    running = wait_for(lambda: _running_line(env, stack, 2), what="line 2 to run")
    assert _trace(env) == ["1", "2"]
    orphan = running["pid"]

    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)  # reaped, as init would: its pid is now really dead
    assert env.state(stack) == "processing"
    os.kill(orphan, 0)  # line 2's shell outlived its daemon
    (env.root / "go").touch()

    daemons.start(env)
    wait_for(lambda: env.state(stack) == "processed", what="the stack to resume and complete")
    assert _trace(env) == ["1", "2", "2", "3"]  # line 1 not again; line 2 again, once
    assert not Path(f"/proc/{orphan}").exists() or _zombie(orphan)
    wait_for(lambda: env.row(stack).state == "completed", what="dbspica: completed")
    # The orphan's row is ended by the recovery that killed it: 137 = 128 + SIGKILL.
    assert env.runs(stack) == [(1, 1, 0), (2, 1, 137), (2, 2, 0), (3, 2, 0)]
    assert all(run.ended_at is not None for run in _run_rows(env, stack))
    recovered = env.problems(stack)
    assert len(recovered) == 1 and "recovered as pending" in recovered[0].message


def _running_line(env: NodeEnv, stack: str, line: int) -> dict | None:
    """``running.json`` once it names ``line`` (written just after the line started)."""
    try:
        running = json.loads((env.stack_dir(stack) / "running.json").read_text())
    except (OSError, ValueError):
        return None
    return running if running["line"] == line else None


def _run_rows(env: NodeEnv, stack: str) -> list[StackRun]:
    engine = env.engine()
    try:
        with Session(engine) as session:
            return list(session.scalars(select(StackRun).join(Stack).where(Stack.name == stack)))
    finally:
        engine.dispose()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_sigterm_lets_the_line_finish_then_leaves_the_stack_pending(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    env = make_node(tmp_path, sqlite_url, daemon={"stop_grace": 30.0})
    stack = "S_TERM"
    env.add(
        stack,
        [
            "echo 1 >> ../../trace; while [ ! -e ../../go ]; do sleep 0.05; done",
            "echo 2 >> ../../trace",
        ],
    )
    proc = daemons.start(env)
    wait_for(lambda: _trace(env) == ["1"], what="line 1 to run")
    proc.send_signal(signal.SIGTERM)
    (env.root / "go").touch()
    assert proc.wait(timeout=30) == 0
    assert env.state(stack) == "spica"  # released, resumable
    assert (env.stack_dir(stack) / "progress").read_text().strip() == "1"
    assert json.loads((env.queue / f"{stack}.spica").read_text())["stack"] == stack
    wait_for(lambda: env.row(stack).state == "pending", what="dbspica: pending")

    daemons.start(env)
    wait_for(lambda: env.state(stack) == "processed", what="the stack to complete")
    assert _trace(env) == ["1", "2"]


def test_sigterm_kills_a_line_after_the_grace_and_it_runs_again(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    env = make_node(tmp_path, sqlite_url, daemon={"stop_grace": 0.5})
    stack = "S_GRACE"
    env.add(
        stack,
        ["echo 1 >> ../../trace", "echo 2 >> ../../trace; [ -e ../../go ] || sleep 60"],
    )
    proc = daemons.start(env)
    orphan = wait_for(lambda: _running_line(env, stack, 2), what="line 2 to run")["pid"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert env.state(stack) == "spica"
    assert _zombie(orphan) or not Path(f"/proc/{orphan}").exists()
    assert (env.stack_dir(stack) / "progress").read_text().strip() == "1"
    (env.root / "go").touch()

    daemons.start(env)
    wait_for(lambda: env.state(stack) == "processed", what="the stack to complete")
    wait_for(lambda: env.row(stack).state == "completed", what="dbspica: completed")
    assert env.runs(stack) == [(1, 1, 0), (2, 1, 143), (2, 2, 0)]


def test_two_daemons_on_one_root_run_each_stack_once(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    env = make_node(tmp_path, sqlite_url, daemon={"slots": 4})
    daemons.start(env, log_name="daemon-a.log")
    daemons.start(env, log_name="daemon-b.log")
    stacks = [f"TWO_{i:02d}" for i in range(20)]
    for name in stacks:
        env.add(
            name,
            [f"echo {name}:{n} >> ../../trace; sleep 0.02" for n in (1, 2, 3)],
            priority=len(name) % 3,
        )
    wait_for(
        lambda: all(env.state(s) == "processed" for s in stacks),
        timeout=60,
        what="all 20 stacks to complete",
    )
    trace = _trace(env)
    assert sorted(trace) == sorted(f"{s}:{n}" for s in stacks for n in (1, 2, 3))
    claimers = {json.loads((env.queue / f"{s}.processed").read_text())["pid"] for s in stacks}
    assert claimers <= {p.pid for p in daemons.procs}
    wait_for(
        lambda: all(env.row(s).state == "completed" for s in stacks), what="dbspica: completed"
    )
    for s in stacks:
        assert env.runs(s) == [(1, 1, 0), (2, 1, 0), (3, 1, 0)]

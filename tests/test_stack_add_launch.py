"""``stack add --launch`` is an operator launch: audited, and the ``.spica`` is created
exclusively, so a queue file already there (or appearing meanwhile) is never overwritten."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.db.models import OperatorAction
from spica_core.stack_add import LaunchNotApplied, add_stack
from tests.conftest import invoke_spica
from tests.daemon_support import NodeEnv, make_node


def _audit(env: NodeEnv, stack: str) -> list[tuple[str, bool, str]]:
    """``(result, dry_run, message-or-plan)`` of the launch rows naming only ``stack``."""
    engine = env.engine()
    try:
        with Session(engine) as s:
            rows = s.scalars(
                select(OperatorAction)
                .where(OperatorAction.action == "launch")
                .order_by(OperatorAction.id)
            ).all()
            return [
                (r.result, r.dry_run, (r.detail or {}).get("message") or r.plan)
                for r in rows
                if r.targets == [stack]
            ]
    finally:
        engine.dispose()


def _intruder_record(stack: str) -> str:
    return json.dumps(
        {"stack": stack, "priority": 9, "launched_at": "2026-12-01T00:00:00Z", "by": "intruder"}
    )


def test_stack_add_launch_writes_the_launch_audit_rows(tmp_path: Path, sqlite_url: str) -> None:
    env = make_node(tmp_path, sqlite_url)
    commands = tmp_path / "c.sh"
    commands.write_text("echo one\n")
    added = invoke_spica(
        "--config", str(env.config_path), "stack", "add", "ADHOC_1", "--node", "mix1",
        "--commands", str(commands), "--launch", "--json", env={"SPICA_OPERATOR": "ada"},
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["state"] == "pending"
    assert json.loads((env.queue / "ADHOC_1.spica").read_text())["by"] == "ada"
    assert env.row("ADHOC_1").state == "pending"
    ((result, dry_run, message),) = _audit(env, "ADHOC_1")
    assert (result, dry_run) == ("applied", False)
    assert message == "launch by ada"


def test_stack_add_launch_onto_a_pending_stack_is_refused_and_audited(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = make_node(tmp_path, sqlite_url)
    cfg = ["--config", str(env.config_path)]
    commands = tmp_path / "c.sh"
    commands.write_text("echo mine\n")

    # A queue file with no row (a hand-made launch): refused, audited, left as it was.
    theirs = _intruder_record("GHOST_1")
    (env.queue / "GHOST_1.spica").write_text(theirs)
    ghost = invoke_spica(
        *cfg, "stack", "add", "GHOST_1", "-n", "mix1", "-c", str(commands), "--launch"
    )
    assert ghost.returncode == 1 and "already exists" in ghost.stderr, ghost.stderr
    assert (env.queue / "GHOST_1.spica").read_text() == theirs
    assert env.row("GHOST_1") is None and not env.stack_dir("GHOST_1").exists()
    ((result, dry_run, why),) = _audit(env, "GHOST_1")
    assert (result, dry_run) == ("refused", False)
    assert "GHOST_1.spica" in why

    # A second add of a launched stack: refused, audited, its .spica untouched.
    first = invoke_spica(
        *cfg, "stack", "add", "TWICE_1", "-n", "mix1", "-c", str(commands), "--launch"
    )
    assert first.returncode == 0, first.stderr
    before = (env.queue / "TWICE_1.spica").read_bytes()
    again = invoke_spica(
        *cfg, "stack", "add", "TWICE_1", "-n", "mix1", "-c", "-", "--launch", input="x\n"
    )
    assert again.returncode == 1 and "already exists" in again.stderr, again.stderr
    assert (env.queue / "TWICE_1.spica").read_bytes() == before
    assert (env.stack_dir("TWICE_1") / "commands.sh").read_text() == "echo mine\n"
    assert [r[0] for r in _audit(env, "TWICE_1")] == ["applied", "refused"]


_INTRUDER = textwrap.dedent(
    """
    import json, os, sys, time
    root, names = sys.argv[1], sys.argv[2:]
    for name in names:
        deadline = time.monotonic() + 30
        staged = os.path.join(root, "stacks", name, "commands.sh")
        while not os.path.exists(staged) and time.monotonic() < deadline:
            pass
        record = {"stack": name, "priority": 9, "launched_at": "2026-12-01T00:00:00Z",
                  "by": "intruder"}
        path = os.path.join(root, "queue", name + ".spica")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            print("lost", name, flush=True)
            continue
        os.write(fd, json.dumps(record).encode())
        os.close(fd)
        print("won", name, flush=True)
    """
)


def test_a_spica_made_between_staging_and_launch_is_never_overwritten(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Another process creates the ``.spica`` as soon as the commands are staged, racing the
    launch, round after round: exactly one of the two makes it, the other is told so, and
    each refused launch is audited."""
    env = make_node(tmp_path, sqlite_url)
    config, engine = env.config(), env.engine()
    names = [f"RACE_{i:02d}" for i in range(30)]
    intruder = subprocess.Popen(
        [sys.executable, "-c", _INTRUDER, str(env.root), *names],
        stdout=subprocess.PIPE,
        text=True,
    )
    refused: set[str] = set()
    deadline = time.monotonic() + 120
    try:
        for name in names:
            assert time.monotonic() < deadline, "the rounds took too long"
            try:
                add_stack(engine, config, name, "mix1", b"true\n", launch=True, by="adder")
            except LaunchNotApplied as exc:
                assert "already pending" in str(exc) or "already exists" in str(exc), exc
                refused.add(name)
        out, _ = intruder.communicate(timeout=60)
    finally:
        intruder.kill()
        engine.dispose()
    verdicts = dict(reversed(line.split()) for line in out.splitlines())
    assert sorted(verdicts) == names
    for name in names:  # first the files: who made the .spica, and who was told so
        record = json.loads((env.queue / f"{name}.spica").read_text())
        winner = "intruder" if verdicts[name] == "won" else "adder"
        assert record["by"] == winner, f"{name}: the {winner}'s .spica was overwritten"
        assert (name in refused) == (winner == "intruder"), name
    for name in names:  # then dbspica and the audit
        if name in refused:
            assert env.row(name).state == "planned"
            assert [r[0] for r in _audit(env, name)] == ["refused"]
        else:
            assert env.row(name).state == "pending"
            assert [r[0] for r in _audit(env, name)] == ["applied"]
    assert "won" in verdicts.values(), "the intruder never got between staging and launch"

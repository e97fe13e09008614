"""Preflight and bad stacks: each gives a clear state and problem row, the daemon goes on.

Also the command line of the node side: ``spica check`` and ``spica stack add``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from spica_core.db.models import Application
from spica_core.node.protocol import ErrorRecord
from spica_core.node.records import read_record
from tests.conftest import invoke_spica, run_spica
from tests.daemon_support import (
    Daemons,
    NodeEnv,
    daemon_processes,
    make_node,
    wait_for,
)


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    yield from daemon_processes()


def _error(env: NodeEnv, stack: str) -> ErrorRecord:
    record, why = read_record(env.queue / f"{stack}.error", ErrorRecord)
    assert why is None and record is not None, why
    return record


def test_bad_stacks_are_rejected_or_wait_and_the_daemon_serves_the_others(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    env = make_node(tmp_path, sqlite_url)
    env.add("GOOD_BEFORE", ["echo ok"])
    env.add("BAD_JSON", ["echo never"])
    (env.queue / "BAD_JSON.spica").write_text('{"stack": "BAD_JSON", "prio')
    env.add("BINARY", ["echo never"])
    (env.stack_dir("BINARY") / "commands.sh").write_bytes(b"\x7fELF\x00\x01\x02")
    env.add("EMPTY", ["echo never"])
    (env.stack_dir("EMPTY") / "commands.sh").write_text("\n# nothing to run\n")
    (env.queue / "NO_COMMANDS.spica").write_text("")  # a legacy launch, no stack directory
    env.add("NEEDS_INPUT", ["echo ran >> ../../trace"])
    (env.stack_dir("NEEDS_INPUT") / "inputs").write_text("# inputs\nraid1/805282p.fits\n")

    daemons.start(env)
    env.add("GOOD_AFTER", ["echo ok"])

    for stack, words in (
        ("BAD_JSON", "BAD_JSON.spica is malformed: not JSON"),
        ("BINARY", "binary file"),
        ("EMPTY", "holds no command"),
        ("NO_COMMANDS", "commands.sh missing"),
    ):
        wait_for(lambda s=stack: env.state(s) == "error", what=f"{stack} to be rejected")
        assert words in _error(env, stack).message
        wait_for(lambda s=stack: env.row(s) and env.row(s).state == "failed", what=f"{stack} row")
        assert words in env.row(stack).error
        problems = env.problems(stack)
        assert len(problems) == 1 and words in problems[0].message

    for stack in ("GOOD_BEFORE", "GOOD_AFTER"):
        wait_for(lambda s=stack: env.state(s) == "processed", what=f"{stack} to run")

    wait_for(
        lambda: (env.row("NEEDS_INPUT").error or "").startswith("check: missing input"),
        what="the missing input to show in dbspica",
    )
    assert env.state("NEEDS_INPUT") == "spica"
    check = json.loads((env.stack_dir("NEEDS_INPUT") / "check.json").read_text())
    assert "raid1/805282p.fits" in check["reason"] and check["failures"] >= 1
    listed = invoke_spica("--config", str(env.config_path), "stacks", "--state", "pending")
    assert "check: missing input" in listed.stdout
    (env.root / "raid1" / "805282p.fits").write_bytes(b"SIMPLE  = T")
    wait_for(lambda: env.state("NEEDS_INPUT") == "processed", what="the stack once its input is")
    problems = env.problems("NEEDS_INPUT")
    assert len(problems) == 1 and "missing input" in problems[0].message  # not one per retry
    wait_for(lambda: env.row("NEEDS_INPUT").state == "completed", what="dbspica: completed")
    assert env.row("NEEDS_INPUT").error is None


def test_a_full_partition_or_a_changed_binary_keeps_stacks_pending(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    tool = tmp_path / "bin" / "scamp"
    tool.parent.mkdir()
    tool.write_bytes(b"#!/bin/sh\necho scamp 2.10.0\n")
    env = make_node(
        tmp_path,
        sqlite_url,
        daemon={"check_backoff": 60.0, "check_backoff_max": 60.0},
        partitions='[[nodes.partitions]]\nname = "raid1"\ncapacity = "1 MB"\nmin_free = "600 KB"',
        extra=f'[[release.applications]]\nname = "scamp"\nbinary = "{tool}"\nversion = "2.10.0"',
    )
    engine = env.engine()
    with Session(engine) as session, session.begin():
        session.add(
            Application(
                name="scamp",
                binary=str(tool),
                version="2.10.0",
                checksum=hashlib.sha256(tool.read_bytes()).hexdigest(),
            )
        )
    engine.dispose()
    (env.root / "raid1" / "big.fits").write_bytes(b"\0" * 500_000)
    env.add("WAITS", ["echo ran >> ../../trace"])
    daemons.start(env)

    wait_for(lambda: "raid1 has" in (env.row("WAITS").error or ""), what="the full disk in dbspica")
    assert env.state("WAITS") == "spica"
    reason = env.row("WAITS").error
    assert reason.startswith("check: partition raid1 has 500.0 KB free, needs 600.0 KB")
    messages = [p.message for p in env.problems("WAITS")]
    assert messages == [f"check failed, stack waits: {reason.removeprefix('check: ')}"]

    cli = ["--config", str(env.config_path), "check", "WAITS", "--node", "mix1"]
    full = invoke_spica(*cli)
    assert full.returncode == 1 and "raid1" in full.stdout

    (env.root / "raid1" / "big.fits").unlink()
    tool.write_bytes(b"#!/bin/sh\necho scamp 2.11.0-patched\n")
    changed = invoke_spica(*cli, "--json")
    assert changed.returncode == 1
    report = json.loads(changed.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["applications"]
    assert "differs from the application table" in failed[0]["detail"]

    tool.write_bytes(b"#!/bin/sh\necho scamp 2.10.0\n")
    ready = invoke_spica(*cli, "--json")
    assert ready.returncode == 0, ready.stdout
    assert json.loads(ready.stdout)["ok"] is True
    # The daemon's backoff is a minute here: `spica check` passing makes it look again now.
    wait_for(lambda: env.state("WAITS") == "processed", what="the stack to run after the fix")
    assert not (env.stack_dir("WAITS") / "check.json").exists()


def test_stack_add_cli(tmp_path: Path, sqlite_url: str) -> None:
    env = make_node(tmp_path, sqlite_url)
    cfg = ["--config", str(env.config_path)]
    commands = tmp_path / "commands.sh"
    commands.write_text("echo one\n\n# a comment\necho two\n")

    added = invoke_spica(
        *cfg, "stack", "add", "ADHOC_1", "--node", "mix1", "--commands", str(commands),
        "--step", "image", "--priority", "5", "--launch", "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    data = json.loads(added.stdout)
    assert (data["stack"], data["lines"], data["commands"], data["state"]) == (
        "ADHOC_1",
        4,
        2,
        "pending",
    )
    assert (env.stack_dir("ADHOC_1") / "commands.sh").read_text() == commands.read_text()
    launch = json.loads((env.queue / "ADHOC_1.spica").read_text())
    assert (launch["stack"], launch["priority"]) == ("ADHOC_1", 5)
    row = env.row("ADHOC_1")
    assert (row.state, row.step, row.priority, row.lines, row.release) == (
        "pending",
        "image",
        5,
        4,
        "T0003",
    )

    planned = invoke_spica(*cfg, "stack", "add", "ADHOC_2", "-n", "mix1", "-c", "-", input="true\n")
    assert planned.returncode == 0, planned.stderr
    assert env.row("ADHOC_2").state == "planned" and env.state("ADHOC_2") is None

    again = invoke_spica(*cfg, "stack", "add", "ADHOC_1", "--node", "mix1", "-c", str(commands))
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = invoke_spica(*cfg, "stack", "add", "../evil", "--node", "mix1", "-c", str(commands))
    assert bad.returncode == 2 and "invalid stack name" in bad.stderr
    empty = tmp_path / "empty.sh"
    empty.write_text("\n")
    refused = invoke_spica(*cfg, "stack", "add", "ADHOC_3", "--node", "mix1", "-c", str(empty))
    assert refused.returncode == 2 and "holds no command" in refused.stderr
    assert env.row("ADHOC_3") is None and not env.stack_dir("ADHOC_3").exists()
    unknown = invoke_spica(*cfg, "stack", "add", "ADHOC_4", "--node", "pix9", "-c", str(commands))
    assert unknown.returncode == 2 and "pix9" in unknown.stderr


def test_stack_add_for_a_root_elsewhere_goes_over_ssh(tmp_path: Path, sqlite_url: str) -> None:
    """A root not on this machine is reached through the node's agent; here the node has no
    known host key, so nothing is written and the reason is named."""
    env = make_node(tmp_path, sqlite_url)
    text = env.config_path.read_text().replace(str(env.root), str(tmp_path / "elsewhere"))
    env.config_path.write_text(text)
    commands = tmp_path / "c.sh"
    commands.write_text("true\n")
    result = invoke_spica(
        "--config", str(env.config_path), "stack", "add", "S", "--node", "mix1",
        "--commands", str(commands),
    )  # fmt: skip
    assert result.returncode == 2 and "known_hosts" in result.stderr
    assert "host keys are always verified" in result.stderr
    assert env.row("S") is None
    assert not (tmp_path / "elsewhere").exists()


def test_daemon_refuses_an_unknown_node(tmp_path: Path, sqlite_url: str) -> None:
    env = make_node(tmp_path, sqlite_url)
    result = run_spica("--config", str(env.config_path), "daemon", "--node", "pix9", timeout=30)
    assert result.returncode == 2 and "pix9" in result.stderr

"""Entries in ``queue/`` that are not stacks (links, directories, FIFOs, bad names) never stop
a node: the real daemon skips them, reports each once, and runs the valid stacks; the agent's
status lists them without choking."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import Daemons, NodeEnv, daemon_processes, make_node, wait_for
from tests.test_node_agent import result

#: What names each hostile entry (or stack) in the log and in its one problem row.
JUNK = (
    "junk.spica",
    "adir.spica",
    "fifo.spica",
    "link.processing",
    "bad name.spica",
    "twin_T0001.processed skipped",
    "evil_T0001: not claimed",
)
#: The log line of the stack whose linked twin is reported, and its problem row.
DRIFT = ("twin_T0001: check failed", "check failed, stack waits: queue drift")


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    yield from daemon_processes()


def _plant_junk(queue: Path) -> None:
    os.symlink("/etc/passwd", queue / "junk.spica")
    (queue / "adir.spica").mkdir()
    os.mkfifo(queue / "fifo.spica")
    os.symlink("/etc", queue / "link.processing")
    (queue / "bad name.spica").write_text("")
    os.symlink("/etc/passwd", queue / ".moved.spica.1.moving")  # an interrupted move, faked


def _heartbeats(env: NodeEnv, count: int) -> None:
    """Let ``count`` heartbeats (hence many passes) go by."""
    for _ in range(count):
        before = os.stat(env.root / "daemon.heartbeat").st_mtime_ns
        wait_for(
            lambda before=before: os.stat(env.root / "daemon.heartbeat").st_mtime_ns != before,
            what="the next heartbeat",
        )


def test_junk_in_the_queue_is_reported_once_and_valid_stacks_still_run(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    env = make_node(tmp_path, sqlite_url)
    _plant_junk(env.queue)
    env.add("first_T0001", ["echo first >> ../../trace"], priority=-5)
    # A launched stack whose directory leads out of the root, one with a linked twin.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "commands.sh").write_text("echo escaped >> ../trace\n")
    os.symlink(outside, env.stack_dir("evil_T0001"))
    (env.queue / "evil_T0001.spica").write_text("")
    env.add("twin_T0001", ["echo twin >> ../../trace"], launch=True, priority=5)
    os.symlink("/etc/passwd", env.queue / "twin_T0001.processed")
    daemons.start(env)
    wait_for(lambda: env.state("first_T0001") == "processed", what="the valid stack to run")
    _heartbeats(env, 6)  # a dozen passes at least (poll 0.2 s, heartbeat 0.5 s)
    env.add("second_T0001", ["echo second >> ../../trace"])
    wait_for(lambda: env.state("second_T0001") == "processed", what="a later stack to run")
    _heartbeats(env, 2)

    assert (env.root / "trace").read_text().split() == ["first", "second"]
    assert not (tmp_path / "trace").exists()
    # Both stay pending (an error in the pass left them, the others ran).
    assert env.state("evil_T0001") == "spica"
    log = (env.base / "daemon.log").read_text()
    assert "daemon pass failed" not in log and log.count("Traceback") == 1  # evil_T0001
    for name in (*JUNK, DRIFT[0]):
        assert log.count(name) == 1, f"{name} reported {log.count(name)} times:\n{log}"
    messages = wait_for(
        lambda: found if len(found := [p.message for p in env.problems()]) > len(JUNK) else None,
        what="a problem row per entry",
    )
    for name in (*JUNK, DRIFT[1]):
        assert sum(name in m for m in messages) == 1, (name, messages)
    assert len(messages) == len(JUNK) + 1
    # Left as they are: nothing followed, nothing renamed.
    assert os.readlink(env.queue / "junk.spica") == "/etc/passwd"
    assert (env.queue / "adir.spica").is_dir() and (env.queue / "fifo.spica").is_fifo()


def test_agent_status_lists_the_junk_and_the_stacks(tmp_path: Path) -> None:
    root = tmp_path / "spica"
    (root / "queue").mkdir(parents=True)
    _plant_junk(root / "queue")
    (root / "queue" / "good.spica").write_text("")
    status = result(root, "status", {"partitions": []})
    entries = {e["stack"]: e for e in status["queue"]}
    assert entries["good"]["malformed"] is None
    for stack in ("junk", "adir", "fifo", "link"):
        assert entries[stack]["malformed"] == "not a regular file"

"""The daemon's parts in-process: command files, queue order, claims, slots, staleness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spica_core.daemon import claims
from spica_core.daemon.service import DaemonService, journal_path, local_node
from spica_core.errors import ConfigError
from spica_core.node.host import boot_id, hostname
from spica_core.node.layout import NodeLayout, OutsideRoot
from spica_core.node.protocol import ClaimRecord, LaunchRecord
from spica_core.node.records import record_bytes, write_record
from spica_core.node.stack_files import StackFileError, is_noop, parse_commands
from spica_core.states import StackState
from tests.daemon_support import make_node, wait_for


def test_command_files_are_physical_lines() -> None:
    assert parse_commands(b"echo 1\r\n\n# note\necho 4") == [b"echo 1", b"", b"# note", b"echo 4"]
    assert parse_commands(b"a\nb\n") == [b"a", b"b"]
    assert [is_noop(x) for x in (b"", b"  ", b"  # c", b"echo # not a comment")] == [
        True,
        True,
        True,
        False,
    ]
    for data, words in (
        (b"", "holds no command"),
        (b"\n  \n# only a comment\n", "holds no command"),
        (b"echo \x00", "binary"),
        (b"echo \xff\xfe", "not UTF-8"),
    ):
        with pytest.raises(StackFileError, match=words):
            parse_commands(data)


def _spica(layout: NodeLayout, stack: str, content: str, mtime: float) -> None:
    path = layout.queue_file(stack, StackState.PENDING)
    path.write_text(content)
    os.utime(path, (mtime, mtime))


def test_pending_order_is_priority_then_age(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path)
    (tmp_path / "queue").mkdir()
    launch = '{{"stack": "{0}", "priority": {1}, "launched_at": "t", "by": "me"}}'
    _spica(layout, "OLD_LOW", launch.format("OLD_LOW", 0), 1000)
    _spica(layout, "NEW_HIGH", launch.format("NEW_HIGH", 5), 3000)
    _spica(layout, "OLD_HIGH", launch.format("OLD_HIGH", 5), 2000)
    _spica(layout, "LEGACY", "", 500)  # an empty (legacy) launch: priority 0
    # The seed's manual requeue: an .error renamed back, error record and all.
    _spica(layout, "REQUEUED", '{"line": 3, "exit_code": 1, "message": "x"}', 1500)
    _spica(layout, "GARBAGE", "{not json", 100)
    (tmp_path / "queue" / "bad name!.spica").write_text("")
    pending = claims.list_pending(layout)
    assert [p.stack for p in pending] == [
        "OLD_HIGH",
        "NEW_HIGH",
        "GARBAGE",
        "LEGACY",
        "OLD_LOW",
        "REQUEUED",
    ]
    assert [p.stack for p in pending if p.malformed] == ["GARBAGE"]
    assert [p.stack for p in pending if p.unsettled] == ["REQUEUED"]
    assert pending[0].launch.by == "me" and pending[3].launch.by == claims.LEGACY_LAUNCHER


def test_a_claim_is_exclusive_and_records_who_and_which_attempt(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path)
    for sub in ("queue", "stacks/S1"):
        (tmp_path / sub).mkdir(parents=True)
    _spica(layout, "S1", '{"stack": "S1", "priority": 3, "launched_at": "t0", "by": "op"}', 1)
    (pending,) = claims.list_pending(layout)
    owned = claims.claim(layout, pending)
    assert owned is not None and owned.attempt == 1
    assert claims.claim(layout, pending) is None  # the rename can only win once
    record = json.loads((tmp_path / "queue" / "S1.processing").read_text())
    assert (record["pid"], record["attempt"], record["priority"]) == (os.getpid(), 1, 3)
    assert claims.find_stale(layout) == []  # alive: this process

    claims.release(layout, owned)
    (again,) = claims.list_pending(layout)
    assert (again.priority, again.launch.by) == (3, "op")
    assert claims.claim(layout, again).attempt == 2  # type: ignore[union-attr]


def test_stale_claims(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path)
    for sub in ("queue", "stacks/DEAD", "stacks/REBOOTED", "stacks/YOUNG", "stacks/OLD"):
        (tmp_path / sub).mkdir(parents=True)
    dead = ClaimRecord(
        pid=2**22 + 12345, host=hostname(), boot_id=boot_id(), started_at="t", attempt=1, priority=4
    )
    (tmp_path / "queue" / "DEAD.processing").write_bytes(record_bytes(dead))
    rebooted = ClaimRecord(pid=os.getpid(), host=hostname(), boot_id="another-boot", started_at="t")
    (tmp_path / "queue" / "REBOOTED.processing").write_bytes(record_bytes(rebooted))
    (tmp_path / "queue" / "YOUNG.processing").write_text("")  # being claimed right now
    old = tmp_path / "queue" / "OLD.processing"
    old.write_text("")
    found = {s.stack: s.why for s in claims.find_stale(layout, now=time.time() + 5)}
    assert set(found) == {"DEAD", "REBOOTED"}
    assert "before a reboot" in found["REBOOTED"]
    found = {s.stack for s in claims.find_stale(layout, now=time.time() + 60)}
    assert found == {"DEAD", "REBOOTED", "YOUNG", "OLD"}

    (stale,) = [s for s in claims.find_stale(layout) if s.stack == "DEAD"]
    done = claims.recover(layout, stale, StackState.PENDING)
    assert done is not None and (done.line, done.attempt) == (1, 1)
    launch = json.loads((tmp_path / "queue" / "DEAD.spica").read_text())
    assert (launch["stack"], launch["priority"]) == ("DEAD", 4)
    (stale,) = [s for s in claims.find_stale(layout) if s.stack == "REBOOTED"]
    failed = claims.recover(layout, stale, StackState.FAILED)
    assert failed is not None and (tmp_path / "queue" / "REBOOTED.error").exists()


def test_which_node_am_i(tmp_path: Path, sqlite_url: str) -> None:
    config = make_node(tmp_path, sqlite_url).config()
    assert local_node(config).name == "mix1"  # host 127.0.0.1 is not us, its root is here
    assert local_node(config, "mix1").name == "mix1"
    with pytest.raises(ConfigError, match="pix9"):
        local_node(config, "pix9")
    root = tmp_path / "root"
    assert journal_path(root, "journal/dbspica.jsonl") == root.resolve() / "journal/dbspica.jsonl"
    with pytest.raises(OutsideRoot):
        journal_path(root, "../elsewhere.jsonl")


def test_slots_bound_the_stacks_running_at_once(tmp_path: Path, sqlite_url: str) -> None:
    env = make_node(tmp_path, sqlite_url, daemon={"slots": 2})
    gate = "while [ ! -e ../../gate ]; do sleep 0.02; done"
    names = [f"SLOT_{i}" for i in range(4)]
    for name in names:
        env.add(name, [gate])
    config = env.config()
    service = DaemonService(config, config.nodes[0])
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        wait_for(lambda: sum(env.state(n) == "processing" for n in names) == 2, what="two running")
        time.sleep(0.5)  # several passes of the loop: still two
        assert sorted(env.state(n) for n in names) == ["processing"] * 2 + ["spica"] * 2
        assert len(service.running) == 2
        (env.root / "gate").touch()
        wait_for(lambda: all(env.state(n) == "processed" for n in names), what="all four done")
    finally:
        service.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


_ERROR_WATCHER = """
import json, os, sys, time
queue, stop = sys.argv[1], sys.argv[2]
seen = bad = 0
while not os.path.exists(stop):
    for name in os.listdir(queue):
        if not name.endswith(".error"):
            continue
        try:
            with open(os.path.join(queue, name), encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        seen += 1
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "message" not in record:
            bad += 1
            print("BAD", name, repr(text[:80]), flush=True)
print("SEEN", seen, "BAD", bad, flush=True)
"""


def test_a_rejected_stack_never_shows_a_half_written_error(tmp_path: Path) -> None:
    """A reader (the agent, a test) racing the daemon's reject only ever sees a whole error
    record under ``.error``: the launch is never visible under the failed state."""
    layout = NodeLayout(tmp_path)
    layout.queue_dir().mkdir(parents=True)
    stop = tmp_path / "stop"
    watcher = subprocess.Popen(
        [sys.executable, "-c", _ERROR_WATCHER, str(layout.queue_dir()), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        for round_ in range(400):
            if time.monotonic() > deadline:
                break
            stack = f"S{round_}"
            launch = LaunchRecord(stack=stack, priority=0, launched_at="x", by="op")
            write_record(layout.queue_file(stack, StackState.PENDING), launch)
            pending = next(p for p in claims.list_pending(layout) if p.stack == stack)
            assert claims.reject(layout, pending, f"cannot run {stack}")
            # Keep the queue small so the watcher looks at the newest rejects.
            if round_ >= 5:
                layout.queue_file(f"S{round_ - 5}", StackState.FAILED).unlink()
    finally:
        stop.touch()
        out, _ = watcher.communicate(timeout=30)
    last = out.splitlines()[-1].split()
    assert last[0] == "SEEN" and int(last[1]) > 0 and last[3] == "0", out

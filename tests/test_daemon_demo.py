"""The demo cluster runs a daemon on each node: queued stacks run, ``down`` stops them.

``spica demo up`` starts them; ``DemoCluster.up`` only when asked (``daemons=True``), so
tests that stage queue files on passive demo nodes keep them as they made them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster, DemoNotFound
from spica_core.node.host import iso_utc
from spica_core.stack_add import add_stack
from tests.daemon_support import wait_for


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_demo_daemons_run_stacks_and_stop_with_the_cluster(tmp_path: Path) -> None:
    demo = DemoCluster(tmp_path / "demo")
    try:
        assert demo.up(2).daemons_started == ()  # passive nodes unless asked
        assert not any(n.daemon_alive for n in demo.status().nodes)
        up = demo.up(daemons=True)
        assert up.daemons_started == ("mix1", "mix2") and up.started == ()
        status = demo.status()
        assert all(n.daemon_alive and n.daemon_pid for n in status.nodes)
        assert status.to_json()["nodes"][0]["daemon_alive"] is True

        config = load_config(demo.config_path)
        prepare_database(config, create=True)
        engine = make_engine(config.db)
        try:
            add_stack(
                engine, config, "DEMO_ADHOC", "mix2", b"echo hello\necho world\n", launch=True
            )
        finally:
            engine.dispose()
        done = demo.node_root("mix2") / "queue" / "DEMO_ADHOC.processed"
        wait_for(done.exists, what="the demo daemon of mix2 to run the stack")
        assert (demo.node_root("mix2") / "stacks/DEMO_ADHOC/logs/002.log").read_text() == "world\n"

        assert demo.up(daemons=True).daemons_started == ()
        victim = status.nodes[0].daemon_pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while demo.status().nodes[0].daemon_alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert demo.up().daemons_started == ()
        again = demo.up(daemons=True)
        assert again.daemons_started == ("mix1",) and again.started == ()

        pids = [n.daemon_pid for n in demo.status().nodes]
        demo.down()
        assert all(pid is not None and _gone(pid) for pid in pids)
        assert not any(n.daemon_alive for n in demo.status().nodes)
    finally:
        with contextlib.suppress(DemoNotFound):
            demo.down()


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sleep", "120"], env={**os.environ, **(env or {})}, start_new_session=True
    )


def test_down_kills_the_line_a_dead_daemon_left_and_nothing_else(tmp_path: Path) -> None:
    demo = DemoCluster(tmp_path / "demo")
    decoys: list[subprocess.Popen[bytes]] = []
    line = 0
    try:
        demo.up(1, daemons=True)
        config = load_config(demo.config_path)
        prepare_database(config, create=True)
        engine = make_engine(config.db)
        try:
            add_stack(engine, config, "ORPHAN_T0001", "mix1", b"sleep 60\n", launch=True)
        finally:
            engine.dispose()
        root = demo.node_root("mix1")
        running = root / "stacks" / "ORPHAN_T0001" / "running.json"
        record = wait_for(lambda: running.exists() and json.loads(running.read_text()))
        line = record["pid"]
        daemon = demo.status().nodes[0].daemon_pid
        assert daemon is not None
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: _gone(daemon), what="the daemon to die")
        assert _group_members(line), "the line outlives its daemon"

        # Records that point at processes that are not the demo's lines: an unrelated one
        # (a reused pid), one of the same stack name under another root, and one with all
        # the right environment that started after the record (a pid reused later).
        unrelated = _sleeper()
        elsewhere = _sleeper(
            {"SPICA_STACK": "DECOY_B", "SPICA_ATTEMPT": "1", "SPICA_ROOT": str(tmp_path)}
        )
        later = _sleeper({"SPICA_STACK": "DECOY_C", "SPICA_ATTEMPT": "1", "SPICA_ROOT": str(root)})
        decoys += [unrelated, elsewhere, later]
        an_hour_ago = iso_utc(time.time() - 3600)
        for stack, proc, started in (
            ("DECOY_A", unrelated, record["started_at"]),
            ("DECOY_B", elsewhere, record["started_at"]),
            ("DECOY_C", later, an_hour_ago),
        ):
            (root / "stacks" / stack).mkdir()
            fake = {**record, "pid": proc.pid, "attempt": 1, "started_at": started}
            (root / "stacks" / stack / "running.json").write_text(json.dumps(fake))

        demo.down()
        assert _group_members(line) == [], "demo down left the line running"
        assert all(proc.poll() is None for proc in decoys), "demo down killed a bystander"
    finally:
        for proc in decoys:
            proc.kill()
            proc.wait()
        with contextlib.suppress(DemoNotFound):
            demo.down()
        if line and _group_members(line):  # the test failed: leave no line behind
            os.killpg(line, signal.SIGKILL)

"""The demo cluster runs a daemon on each node: queued stacks run, ``down`` stops them.

``spica demo up`` starts them; ``DemoCluster.up`` only when asked (``daemons=True``), so
tests that stage queue files on passive demo nodes keep them as they made them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.setup import prepare_database
from spica_core.demo import DemoCluster, DemoNotFound
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

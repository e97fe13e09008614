"""The console beside a running ``spica watch``: its figures from dbspica, no SSH of its own.

Counted on the node servers' side: each SSH connection starts one agent (``node serve``),
logged by the demo server; while the monitor runs the console starts none. A monitor that
dies is shown stale, then the console polls the nodes itself; one that stops cleanly hands
over at once.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import Liveness
from spica_core.config import load_config
from spica_core.db.models import Monitor as MonitorRow
from spica_core.demo.cluster import DemoCluster
from tests.console_support import mounted, until
from tests.daemon_support import Mailbox, wait_for
from tests.monitor_support import mailbox_fixture, monitor_config, running_demo, start_watch

pytestmark = pytest.mark.timeout(600)

#: The monitor's interval here: figures stale after 3 s, the console takes over after 6 s.
MONITOR_INTERVAL = 1.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    yield from running_demo(tmp_path_factory, "console-monitor", 2)


mailbox = pytest.fixture(name="mailbox")(mailbox_fixture)


def agent_starts(demo: DemoCluster) -> int:
    """Agents the node servers have started: one per SSH connection that polls."""
    logs = [demo.directory / "logs" / f"{n}.log" for n in ("mix1", "mix2")]
    return sum(line.count("node serve") for log in logs for line in log.read_text().splitlines())


def monitor_polled(engine: Engine) -> bool:
    with Session(engine) as session:
        return any(r.polls >= 1 for r in session.scalars(select(MonitorRow)))


def console(path: Path):  # type: ignore[no-untyped-def]
    from spica_core.db.engine import make_engine
    from spica_tui.console.app import SpicaConsole
    from spica_tui.console.refresh import ConsoleBackend

    config = load_config(path)
    return SpicaConsole(config, ConsoleBackend(config, make_engine(config.db)), operator="t")


@pytest.mark.parametrize("stop", ["crash", "sigterm"])
async def test_console_shows_the_monitor_figures_and_polls_no_node(
    demo: DemoCluster,
    db_engine: Engine,
    db_url: str,
    mailbox: Mailbox,
    tmp_path: Path,
    stop: str,
) -> None:
    from spica_tui.console.panels.header import HeaderPanel

    path = monitor_config(demo, db_url, mailbox, tmp_path / "spica.toml", MONITOR_INTERVAL)
    watcher = start_watch(path, tmp_path / "watch.log")
    try:
        await asyncio.to_thread(wait_for, lambda: monitor_polled(db_engine), 60, "a monitor poll")
        before = agent_starts(demo)
        app = console(path)
        async with app.run_test(size=(160, 50)) as pilot:
            header = await mounted(pilot, HeaderPanel)
            who = f"monitor {socket.gethostname()}:{watcher.pid}"
            label = f"{who},"
            await until(
                pilot,
                lambda: label in header.content.plain and "nodes 2/2 up" in header.content.plain,
                "the header naming the monitor, every node up",
            )
            polls = app.poller.polls
            await until(pilot, lambda: app.poller.polls >= polls + 3, "three more console polls")
            assert label in header.content.plain and "STALE" not in header.content.plain
            assert agent_starts(demo) == before  # no SSH connection from the console
            assert all(n.liveness is Liveness.UNKNOWN for n in app.backend.pool.snapshot.nodes)

            if stop == "crash":
                watcher.send_signal(signal.SIGKILL)
                watcher.wait()
                await until(
                    pilot,
                    lambda: f"{who} STALE: last poll" in header.content.plain,
                    "the dead monitor's figures shown stale",
                )
            else:
                watcher.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(watcher.wait, 30) == 0
            await until(
                pilot,
                lambda: (
                    "polling nodes" in header.content.plain
                    and "nodes 2/2 up" in header.content.plain
                ),
                "the console polling the nodes itself",
            )
            assert who not in header.content.plain
            assert agent_starts(demo) > before
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def test_spica_nodes_shows_the_monitor_figures_and_polls_no_node(
    demo: DemoCluster, db_engine: Engine, db_url: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    """`spica nodes` beside a running monitor prints its last poll and contacts no node;
    `--poll` asks the nodes; once the monitor has stopped, the nodes are asked again."""
    import json
    import subprocess
    import sys

    path = monitor_config(demo, db_url, mailbox, tmp_path / "spica.toml", MONITOR_INTERVAL)

    def spica_nodes(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spica_tui", "--config", str(path), "nodes", "--json", *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )

    watcher = start_watch(path, tmp_path / "watch.log")
    try:
        wait_for(lambda: monitor_polled(db_engine), 60, "a monitor poll")
        before = agent_starts(demo)
        shown = spica_nodes()
        assert shown.returncode == 0, shown.stderr
        assert f"figures of monitor {socket.gethostname()}:{watcher.pid}" in shown.stderr
        rows = json.loads(shown.stdout)
        assert [r["name"] for r in rows] == ["mix1", "mix2"]
        assert all(r["status"] == "up" and r["partitions"] for r in rows)
        assert agent_starts(demo) == before  # no SSH connection from the command

        polled = spica_nodes("--poll")
        assert polled.returncode == 0, polled.stderr
        assert "figures of monitor" not in polled.stderr
        assert [r["status"] for r in json.loads(polled.stdout)] == ["up", "up"]
        assert agent_starts(demo) == before + 2  # one agent per node
    finally:
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(30) == 0
    after = spica_nodes()
    assert after.returncode == 0 and "figures of monitor" not in after.stderr
    assert agent_starts(demo) == before + 4

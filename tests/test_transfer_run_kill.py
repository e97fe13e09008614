"""``spica transfer run`` killed midway (kill -9) and run again, to a demo node and to a node
behind a real OpenSSH sshd: every file arrives once, intact; nothing partial is recorded."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spica_core.checksum import file_checksum
from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Transfer
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from tests.openssh import openssh_server
from tests.transfer_support import Planned, make_sources, partials, plan, rows

SPICA = Path(sys.executable).parent / "spica"


@dataclass(frozen=True)
class Target:
    config_path: Path
    node: str
    root: Path


@pytest.fixture(params=["demo", "sshd"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "demo":
        cluster = DemoCluster(tmp_path / "cluster")
        cluster.up(1)
        try:
            yield Target(cluster.config_path, "mix1", cluster.node_root("mix1"))
        finally:
            cluster.down()
        return
    with openssh_server(tmp_path / "sshd") as server:
        root = tmp_path / "root"
        for d in ("queue", "stacks", "locks", "raid1"):
            (root / d).mkdir(parents=True)
        config = tmp_path / "spica.toml"
        config.write_text(
            f"""
[db]
url = "sqlite:///unused.sqlite"
[ssh]
known_hosts = "{server.known_hosts}"
client_keys = ["{server.client_key}"]
call_timeout = 20.0
[[nodes]]
name = "mix6"
host = "127.0.0.1"
port = {server.port}
user = "{server.user}"
root = "{root}"
agent_command = "{SPICA} node serve"
[[nodes.partitions]]
name = "raid1"
"""
        )
        yield Target(config, "mix6", root)


def spica(target: Target, db_url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "spica_tui", "--config", str(target.config_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SPICA_DB_URL": db_url, **env},
    )


def _settled_prefix(root: Path, planned: list[Planned]) -> bool:
    """Once the node has written what it was sent (the partials stop growing), whether a
    partial holds the first bytes of its source, short of all of them."""
    sources = {f".{Path(p.path).name}.spica-part": p.source for p in planned}
    sizes: dict[Path, int] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = {part: size for part in partials(root) if (size := _size(part)) is not None}
        if now == sizes:
            break
        sizes = now
    for part, size in sizes.items():
        source = sources[part.name].read_bytes()
        with contextlib.suppress(FileNotFoundError):  # placed by a request already sent
            if 0 < size < len(source) and part.read_bytes() == source[:size]:
                return True
    return False


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def test_killed_midway_then_run_again(target: Target, db_url: str, tmp_path: Path) -> None:
    os.environ["SPICA_DB_URL"] = db_url
    try:
        config = load_config(target.config_path)
    finally:
        del os.environ["SPICA_DB_URL"]
    prepare_database(config, create=True)
    engine = make_engine(config.db)
    sources = make_sources(tmp_path / "incoming", 10, 3 * 1024 * 1024 + 5)
    planned = plan(engine, "07AQ09", sources, [target.node])

    # Slowed (each 1 MiB block waits), so the kill lands with files done, under way, unstarted.
    first = spica(
        target,
        db_url,
        "transfer",
        "run",
        "07AQ09",
        "--stale-after",
        "1",
        SPICA_FAULT_POINT="transfer-slow-copy",
        SPICA_FAULT_SECONDS="0.15",
    )
    deadline = time.monotonic() + 60
    with Session(engine) as session:
        while time.monotonic() < deadline:
            done = session.scalar(
                select(func.count()).where(Transfer.state == "done", Transfer.runid == "07AQ09")
            )
            session.rollback()
            if done and done >= 2 and any(_size(p) for p in partials(target.root)):
                # Frozen, then killed only once a partial holds its source's first bytes:
                # the partial just seen may be finished and placed before a kill lands,
                # leaving only new, empty ones and nothing for the next run to resume.
                first.send_signal(signal.SIGSTOP)
                if _settled_prefix(target.root, planned):
                    break
                first.send_signal(signal.SIGCONT)
            assert first.poll() is None, first.communicate()
            time.sleep(0.02)
        else:
            pytest.fail("the first run never got midway")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL

    at_kill = rows(engine, "07AQ09")
    states = {t.state for t in at_kill.values()}
    assert {"done", "running", "planned"} <= states, states
    for p in planned:
        row, arrived = at_kill[p.filename], target.root / p.path
        if row.state == "done":  # recorded only once complete and matching on the node
            assert file_checksum(arrived)[0] == row.node_checksum == file_checksum(p.source)[0]
        elif arrived.exists():  # placed, the kill came before its record: complete anyway
            assert arrived.read_bytes() == p.source.read_bytes(), p.filename

    time.sleep(1.2)  # the killed run's rows go stale (no heartbeat for --stale-after 1)
    again = spica(target, db_url, "transfer", "run", "07AQ09", "--stale-after", "1")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    # A partial holding the source's first bytes is taken up where it stopped.
    assert "resume " in err, err

    after = rows(engine, "07AQ09")
    for p in planned:
        row, before = after[p.filename], at_kill[p.filename]
        assert row.state == "done", (p.filename, row.error)
        assert (target.root / p.path).read_bytes() == p.source.read_bytes()
        assert row.checksum == row.node_checksum == file_checksum(p.source)[0]
        expected = {"done": 1, "running": 2, "planned": 1}[before.state]
        assert row.attempts == expected, (p.filename, before.state, row.attempts)
        if before.state == "running":
            assert row.error == "taken back from a runner that stopped"
        else:
            assert row.error is None
    # Each file exactly once under its name, no partial left behind.
    landed = sorted(p.name for p in (target.root / "raid1").rglob("*") if p.is_file())
    assert landed == sorted(s.name for s in sources)
    assert partials(target.root) == []
    engine.dispose()

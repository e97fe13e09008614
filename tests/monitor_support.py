"""Helpers of the monitor tests: a demo's configuration for ``spica watch``, and starting it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from spica_core.demo.cluster import DemoCluster
from tests.daemon_support import Mailbox, smtp_mailbox

INTERVAL = 0.5


def monitor_config(
    demo: DemoCluster,
    db_url: str,
    mailbox: Mailbox,
    path: Path,
    interval: float = INTERVAL,
) -> Path:
    """The demo's spica.toml on ``db_url``, mailing ``mailbox``, the monitor polling every
    ``interval`` and the console refreshing every INTERVAL; absolute paths throughout."""
    raw: dict[str, Any] = tomllib.loads(demo.config_path.read_text())
    raw["db"] = {"url": db_url}
    raw["ssh"].update(
        known_hosts=str(demo.known_hosts_path),
        client_keys=[str(demo.client_key_path)],
        max_backoff=INTERVAL,
        connect_timeout=2.0,
        call_timeout=3.0,
    )
    raw["smtp"] = {"host": "127.0.0.1", "port": mailbox.port, "operators": ["teraop@example.org"]}
    raw["monitor"] = {"interval": interval}
    raw["console"] = {"refresh_interval": INTERVAL}
    path.write_text(tomli_w.dumps(raw))
    return path


def start_watch(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "spica_tui", "--config", str(config), "watch"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def running_demo(factory: pytest.TempPathFactory, name: str, nodes: int) -> Iterator[DemoCluster]:
    """Body of a module-scoped ``demo`` fixture: ``nodes`` passive demo nodes."""
    cluster = DemoCluster(factory.mktemp(name) / "cluster")
    cluster.up(nodes)
    try:
        yield cluster
    finally:
        cluster.down()


def mailbox_fixture() -> Iterator[Mailbox]:
    """Body of a ``mailbox`` fixture: a real SMTP server the monitor mails."""
    yield from smtp_mailbox()

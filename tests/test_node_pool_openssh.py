"""The NodePool against a real OpenSSH sshd: agent channel, host keys, agent-missing fallback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spica_core.cluster_snapshot import Liveness
from spica_core.config import parse_config
from spica_core.node_pool import NodePool
from tests.openssh import openssh_server

SPICA = Path(sys.executable).parent / "spica"


def node_root(base: Path) -> Path:
    root = base / "root"
    for d in ("queue", "stacks", "locks", "raid1", "raid2"):
        (root / d).mkdir(parents=True)
    return root


def config_for(server, root: Path, agent: str, known_hosts: Path | None = None):
    return parse_config(
        f"""
[db]
url = "sqlite:///unused.sqlite"
[ssh]
known_hosts = "{known_hosts or server.known_hosts}"
client_keys = ["{server.client_key}"]
call_timeout = 10.0
[[nodes]]
name = "mix6"
host = "127.0.0.1"
port = {server.port}
user = "{server.user}"
root = "{root}"
agent_command = "{agent}"
[[nodes.partitions]]
name = "raid1"
capacity = "652 GB"
[[nodes.partitions]]
name = "raid2"
""",
        "test.toml",
    )


@pytest.fixture
def sshd(tmp_path: Path):
    with openssh_server(tmp_path / "sshd") as server:
        yield server


async def test_pool_through_openssh(sshd, tmp_path: Path) -> None:
    root = node_root(tmp_path)
    (root / "raid1" / "805282p.fits").write_bytes(b"\0" * 123_456)
    (root / "queue" / "CFHTLS_W_u_021410-041200_T0003.spica").write_text("{}")
    (root / "queue" / "805282p_V0003.error").write_text(
        '{"line": 7, "exit_code": 2, "message": "Failed on spica_copy.pl"}'
    )
    config = config_for(sshd, root, f"{SPICA} node serve")
    async with NodePool(config) as pool:
        snap = (await pool.refresh()).node("mix6")
        assert snap.liveness is Liveness.UP, snap.last_error
        assert snap.agent_version
        raid1 = next(p for p in snap.partitions if p.name == "raid1")
        assert raid1.virtual and raid1.total_bytes == 652 * 10**9
        assert raid1.used_bytes == 123_456
        raid2 = next(p for p in snap.partitions if p.name == "raid2")
        assert not raid2.virtual and raid2.total_bytes > 0
        assert snap.queue_counts() == {"pending": 1, "running": 0, "completed": 0, "failed": 1}
        failed = next(e for e in snap.queue if e.state == "failed")
        assert failed.error and failed.error.line == 7
        # The same channel serves the next poll: the agent's pid does not change.
        first_hello = pool.links["mix6"].hello
        await pool.refresh()
        assert pool.links["mix6"].hello is first_hello


async def test_agent_missing_still_reports_df_and_load(sshd, tmp_path: Path) -> None:
    root = node_root(tmp_path)
    config = config_for(sshd, root, "/nonexistent/spica node serve")
    async with NodePool(config) as pool:
        snap = (await pool.refresh()).node("mix6")
    assert snap.liveness is Liveness.AGENT_MISSING
    assert snap.liveness.reachable
    assert snap.last_error and "agent" in snap.last_error
    assert {p.name for p in snap.partitions} == {"raid1", "raid2"}
    assert all(p.total_bytes > 0 for p in snap.partitions)
    assert snap.load is not None


async def test_wrong_host_key_is_refused_by_name(sshd, tmp_path: Path) -> None:
    other = tmp_path / "other_known_hosts"
    import subprocess

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    pub = (tmp_path / "k.pub").read_text().split()
    other.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    config = config_for(sshd, node_root(tmp_path), f"{SPICA} node serve", known_hosts=other)
    async with NodePool(config) as pool:
        snap = (await pool.refresh()).node("mix6")
    assert snap.liveness is Liveness.DOWN
    assert "host key of 127.0.0.1" in snap.last_error and "refusing to connect" in snap.last_error

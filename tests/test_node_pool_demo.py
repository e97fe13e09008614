"""The NodePool against 8 demo nodes over real SSH: contents, liveness, dbspica rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import Liveness
from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Node, Problem
from spica_core.db.schema import upgrade
from spica_core.demo.cluster import DemoCluster
from spica_core.liveness import LivenessRecorder
from spica_core.node_pool import NodePool
from tests.conftest import invoke_spica

REFRESH = 0.5


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("demo") / "cluster")
    cluster.up(8)
    try:
        yield cluster
    finally:
        cluster.down()


def fast_config(demo: DemoCluster):
    """The demo's own spica.toml, with a short backoff so a restarted node is seen soon."""
    cfg = load_config(demo.config_path)
    return cfg.model_copy(
        update={
            "ssh": cfg.ssh.model_copy(update={"max_backoff": REFRESH, "call_timeout": 5.0}),
            "console": cfg.console.model_copy(update={"refresh_interval": REFRESH}),
        }
    )


def populate(root: Path, index: int) -> dict[str, int]:
    """Queue files of every state and some bytes on raid1; returns the expected counts."""
    counts = {"pending": index % 3, "running": 0, "completed": index, "failed": 1}
    for state, suffix in (("pending", "spica"), ("completed", "processed"), ("failed", "error")):
        for i in range(counts[state]):
            (root / "queue" / f"stack{index}_{state}_{i}.{suffix}").write_text("{}")
    (root / "raid1" / "image.fits").write_bytes(b"x" * (1000 * (index + 1)))
    return counts


async def test_snapshot_matches_disk(demo: DemoCluster) -> None:
    cfg = fast_config(demo)
    assert len(cfg.nodes) == 8
    expected = {node.name: populate(Path(node.root), i) for i, node in enumerate(cfg.nodes)}
    async with NodePool(cfg) as pool:
        snap = await pool.refresh()
    assert snap.unreachable == [], [n.last_error for n in snap.nodes]
    for node in snap.nodes:
        assert node.liveness is Liveness.UP, (node.name, node.last_error)
        assert node.queue_counts() == expected[node.name], node.name
        raid1 = next(p for p in node.partitions if p.name == "raid1")
        configured = next(c for c in cfg.node(node.name).partitions if c.name == "raid1")
        assert raid1.virtual and raid1.total_bytes == configured.capacity
        on_disk = sum(
            f.stat().st_size
            for f in (Path(cfg.node(node.name).root) / "raid1").rglob("*")
            if f.is_file()
        )
        assert raid1.used_bytes == on_disk
        assert raid1.free_bytes == configured.capacity - on_disk
        assert node.load is not None and node.last_seen is not None


async def _poll_until(
    pool: NodePool, recorder: LivenessRecorder, node: str, want: Liveness, rounds: int
) -> int:
    for i in range(1, rounds + 1):
        snap = await pool.refresh()
        await asyncio.to_thread(recorder.record, snap)
        if snap.node(node).liveness is want:
            return i
        await asyncio.sleep(REFRESH)
    raise AssertionError(f"{node} not {want} after {rounds} polls: {snap.node(node)}")


def problems(engine, node: str) -> list[str]:
    with Session(engine) as s:
        return list(
            s.scalars(select(Problem.message).where(Problem.node == node).order_by(Problem.id))
        )


async def test_down_and_back_to_life_recorded_once(demo: DemoCluster) -> None:
    cfg = fast_config(demo)
    engine = make_engine(cfg.db, create=True)
    upgrade(engine)
    recorder = LivenessRecorder(engine)
    async with NodePool(cfg) as pool:
        await _poll_until(pool, recorder, "mix3", Liveness.UP, 3)
        demo.stop_node("mix3")
        try:
            # Down within two refresh intervals of the server stopping.
            assert await _poll_until(pool, recorder, "mix3", Liveness.DOWN, 2) <= 2
            for _ in range(4):  # more polls while down: no more rows
                await asyncio.to_thread(recorder.record, await pool.refresh())
            assert problems(engine, "mix3") == ["Unable to contact mix3 via ssh"]
            with Session(engine) as s:
                row = s.scalars(select(Node).where(Node.name == "mix3")).one()
                assert row.status == "down" and row.last_error
            others = pool.snapshot
            assert all(n.liveness is Liveness.UP for n in others.nodes if n.name != "mix3")
        finally:
            demo.start_node("mix3")
        await _poll_until(pool, recorder, "mix3", Liveness.UP, 20)
        for _ in range(3):
            await asyncio.to_thread(recorder.record, await pool.refresh())
    assert problems(engine, "mix3") == [
        "Unable to contact mix3 via ssh",
        "mix3 is back to life",
    ]
    assert problems(engine, "mix1") == []
    engine.dispose()


async def test_two_recorders_write_a_transition_once(demo: DemoCluster) -> None:
    """Two consoles watching one cluster: the conditional update lets one of them win."""
    cfg = fast_config(demo)
    engine = make_engine(cfg.db, create=True)
    upgrade(engine)
    first, second = LivenessRecorder(engine), LivenessRecorder(engine)
    async with NodePool(cfg) as pool:
        snap = await pool.refresh()
        first.record(snap)
        second.record(snap)
        demo.stop_node("pix1")
        try:
            snap = await pool.refresh()
            assert snap.node("pix1").liveness is Liveness.DOWN
            first.record(snap)
            second.record(snap)
        finally:
            demo.start_node("pix1")
    assert problems(engine, "pix1").count("Unable to contact pix1 via ssh") == 1
    engine.dispose()


def test_unknown_client_key_is_refused(demo: DemoCluster, tmp_path: Path) -> None:
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519")
    key = tmp_path / "stranger"
    key.write_bytes(other.export_private_key())
    key.chmod(0o600)
    cfg = load_config(demo.config_path)
    cfg = cfg.model_copy(update={"ssh": cfg.ssh.model_copy(update={"client_keys": [str(key)]})})

    async def poll():
        async with NodePool(cfg, nodes=["mix1"]) as pool:
            return await pool.refresh()

    snap = asyncio.run(poll()).node("mix1")
    assert snap.liveness is Liveness.DOWN
    assert "permission denied" in snap.last_error.lower()


def test_cli_nodes_json_and_exit_code(demo: DemoCluster) -> None:
    env = {"SPICA_CONFIG": str(demo.config_path)}
    assert invoke_spica("db", "init", env=env).returncode == 0
    ok = invoke_spica("nodes", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    rows = json.loads(ok.stdout)
    assert [r["status"] for r in rows] == ["up"] * 8
    assert set(rows[0]) >= {
        "name",
        "status",
        "last_seen",
        "last_error",
        "load",
        "heartbeat_age",
        "partitions",
        "queue_counts",
        "running",
    }
    demo.stop_node("pix2")
    try:
        down = invoke_spica("nodes", "--json", env=env)
    finally:
        demo.start_node("pix2")
    assert down.returncode == 3
    rows = json.loads(down.stdout)
    assert len(rows) == 8
    assert {r["name"]: r["status"] for r in rows}["pix2"] == "down"
    human = invoke_spica("nodes", env=env)
    assert human.returncode == 0 and "mix1" in human.stdout and "raid1" in human.stdout


async def test_unchanged_listing_is_reused_and_changes_are_seen(demo: DemoCluster) -> None:
    """The agent leaves out a listing the pool already holds; the pool still follows the disk."""
    cfg = fast_config(demo)
    root = Path(cfg.node("mix5").root)
    stack = "VERSIONED_T0003"
    async with NodePool(cfg, nodes=["mix5"]) as pool:
        first = (await pool.refresh()).node("mix5")
        second = (await pool.refresh()).node("mix5")
        assert second.queue is first.queue  # not sent again, not parsed again
        record = {"stack": stack, "priority": 3, "launched_at": "2026-01-01T00:00:00Z", "by": "t"}
        (root / "queue" / f"{stack}.spica").write_text(json.dumps(record))
        try:
            added = (await pool.refresh()).node("mix5")
            entry = next(e for e in added.queue if e.stack == stack)
            assert entry.state.value == "pending"
            assert added.queue_counts()["pending"] == first.queue_counts()["pending"] + 1
            (root / "queue" / f"{stack}.spica").rename(root / "queue" / f"{stack}.error")
            (root / "queue" / f"{stack}.error").write_text(
                json.dumps({"line": 2, "exit_code": 1, "message": "swarp died"})
            )
            failed = (await pool.refresh()).node("mix5")
            entry = next(e for e in failed.queue if e.stack == stack)
            assert entry.state.value == "failed" and entry.error.message == "swarp died"
        finally:
            for suffix in ("spica", "error"):
                (root / "queue" / f"{stack}.{suffix}").unlink(missing_ok=True)
        gone = (await pool.refresh()).node("mix5")
        assert all(e.stack != stack for e in gone.queue)
        assert gone.queue_counts() == first.queue_counts()


def _with_agent(cfg, node: str, command: str, **ssh: float):
    nodes = [
        n.model_copy(update={"agent_command": command}) if n.name == node else n for n in cfg.nodes
    ]
    return cfg.model_copy(update={"nodes": nodes, "ssh": cfg.ssh.model_copy(update=ssh)})


async def test_slow_agent_start_does_not_stall_polls(demo: DemoCluster) -> None:
    """An agent that takes longer than a call to greet: polls go on with plain commands
    (agent missing, saying why), and the agent is taken as soon as it has greeted."""
    cfg = fast_config(demo)
    real = cfg.node("pix1").agent_command
    cfg = _with_agent(cfg, "pix1", f"sleep 3; exec {real}", call_timeout=1.0)
    async with NodePool(cfg, nodes=["pix1"]) as pool:
        first = (await pool.refresh()).node("pix1")
        assert first.liveness is Liveness.AGENT_MISSING
        assert "has not greeted yet" in first.last_error
        assert {p.name for p in first.partitions} == {"raid1", "raid2"}
        for _ in range(20):
            snap = (await pool.refresh()).node("pix1")
            if snap.liveness is Liveness.UP:
                break
            assert "has not greeted yet" in snap.last_error
            await asyncio.sleep(REFRESH)
        assert snap.liveness is Liveness.UP, snap.last_error
        assert snap.last_error is None and snap.agent_version


async def test_agent_that_never_greets_is_reported_missing(demo: DemoCluster) -> None:
    cfg = fast_config(demo)
    real = cfg.node("pix2").agent_command
    cfg = _with_agent(
        cfg, "pix2", f"sleep 30; exec {real}", call_timeout=0.5, agent_start_timeout=1.5
    )
    async with NodePool(cfg, nodes=["pix2"]) as pool:
        for _ in range(20):
            snap = (await pool.refresh()).node("pix2")
            if "did not greet" in (snap.last_error or ""):
                break
            await asyncio.sleep(REFRESH)
        assert snap.liveness is Liveness.AGENT_MISSING
        assert "did not greet" in snap.last_error and "timed out" in snap.last_error
        assert snap.load is not None  # still polled through plain commands
        again = (await pool.refresh()).node("pix2")  # not restarted at every poll
        assert again.liveness is Liveness.AGENT_MISSING and "did not greet" in again.last_error

"""``spica transfer run``: verified copies over the demo nodes' SSH (SFTP), on both engines."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.checksum import file_checksum
from spica_core.config import SpicaConfig, load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Image, Node, Transfer
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.executor.agents import AgentExecutor
from spica_core.node.protocol import PrepareResult
from spica_core.transfer.copy import CopyRun, FileEvent
from spica_core.transfer.copy_rows import Claimed
from tests.conftest import invoke_spica, run_spica
from tests.transfer_support import make_sources, partials, plan, rows


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("transfer") / "cluster")
    cluster.up(2)
    try:
        yield cluster
    finally:
        cluster.down()


def demo_config(demo: DemoCluster, db_url: str, **transfer: object) -> SpicaConfig:
    """The demo's config on ``db_url``, its partitions emptied (the cluster outlives tests)."""
    cfg = load_config(demo.config_path)
    for node in cfg.nodes:
        for partition in Path(node.root).glob("raid*"):
            shutil.rmtree(partition)
            partition.mkdir()
    cfg = cfg.model_copy(
        update={
            "db": cfg.db.model_copy(update={"url": db_url}),
            "transfer": cfg.transfer.model_copy(update={"retry_delay": 0.05, **transfer}),
        }
    )
    prepare_database(cfg, create=True)
    return cfg


def run_copy(config: SpicaConfig, runid: str, **kwargs: object):
    events: list[FileEvent] = []
    engine = make_engine(config.db)

    async def main():
        async with AgentExecutor.over_ssh(config) as executor:
            copy = CopyRun(config, engine, executor, on_event=events.append, **kwargs)  # type: ignore[arg-type]
            return await copy.run(runid)

    try:
        return asyncio.run(main()), events
    finally:
        engine.dispose()


def test_files_reach_their_nodes_verified_and_ingested(
    demo: DemoCluster, db_url: str, tmp_path: Path
) -> None:
    config = demo_config(demo, db_url)
    engine = make_engine(config.db)
    sources = make_sources(tmp_path / "incoming", 6, 3 * 1024 * 1024 + 11)
    roots = {n.name: n.root for n in config.nodes}
    planned = plan(engine, "07AQ01", sources, ["mix1", "mix2"], roots=roots)
    corrupted: list[str] = []

    async def flip_a_byte(c: Claimed, prep: PrepareResult) -> None:
        """The first arrival of one file is damaged on the node's disk before its check."""
        if c.filename == sources[1].name and not corrupted:
            corrupted.append(prep.real_partial)
            with open(prep.real_partial, "r+b") as f:
                f.seek(12345)
                byte = f.read(1)
                f.seek(12345)
                f.write(bytes([byte[0] ^ 0x40]))

    report, events = run_copy(config, "07AQ01", before_place=flip_a_byte)
    assert report.ok and report.count("done") == 6, report.to_json()
    assert corrupted
    by_name = rows(engine, "07AQ01")
    with Session(engine) as session:
        node_ids = {name: id_ for name, id_ in session.execute(select(Node.name, Node.id))}
        for p in planned:
            arrived = Path(roots[p.node]) / p.path
            assert arrived.read_bytes() == p.source.read_bytes()
            row = by_name[p.filename]
            source_sum = file_checksum(p.source)[0]
            assert (row.state, row.checksum, row.node_checksum) == ("done", source_sum, source_sum)
            assert row.bytes == p.source.stat().st_size
            assert row.started_at and row.finished_at and row.finished_at >= row.started_at
            image = session.scalars(select(Image).where(Image.filename == p.filename)).one()
            assert (image.node_id, image.partition, image.repository) == (
                node_ids[p.node],
                "raid1",
                None,
            )
            assert image.path == str(arrived)
    # The damaged arrival was caught by the node's checksum, deleted and copied again.
    damaged = by_name[sources[1].name]
    assert damaged.attempts == 2
    assert damaged.error and "checksum mismatch on" in damaged.error
    others = [r for name, r in by_name.items() if name != sources[1].name]
    assert all(r.attempts == 1 and r.error is None for r in others)
    assert next(e for e in events if e.kind == "retry").filename == sources[1].name
    for root in roots.values():
        assert partials(Path(root)) == []
    # A second run finds nothing to copy, and says so.
    again, _ = run_copy(config, "07AQ01")
    assert again.files == []
    engine.dispose()


def test_a_file_that_never_arrives_intact_fails_after_its_attempts(
    demo: DemoCluster, db_url: str, tmp_path: Path
) -> None:
    config = demo_config(demo, db_url, attempts=3)
    engine = make_engine(config.db)
    sources = make_sources(tmp_path / "incoming", 2, 200_000, prefix="9100")
    planned = plan(engine, "07BQ02", sources, ["mix1"])
    root = Path(config.node("mix1").root)
    sources[1].unlink()  # gone from the repository since it was planned

    async def always_damaged(c: Claimed, prep: PrepareResult) -> None:
        with open(prep.real_partial, "ab") as f:
            f.write(b"!")

    report, events = run_copy(config, "07BQ02", before_place=always_damaged)
    assert not report.ok
    by_name = rows(engine, "07BQ02")
    bad = by_name[sources[0].name]
    assert (bad.state, bad.attempts) == ("failed", 3)
    assert bad.error and "attempt 3: checksum mismatch" in bad.error
    assert bad.node_checksum is None
    missing = by_name[sources[1].name]
    assert (missing.state, missing.attempts) == ("failed", 1)  # no retry cures a missing source
    assert missing.error and str(sources[1]) in missing.error
    # Nothing half-made is left on the node, nothing looks transferred.
    assert not (root / planned[0].path).exists() and partials(root) == []
    with Session(engine) as session:
        images = session.scalars(select(Image).where(Image.filename.like("9100%"))).all()
        assert all(i.node_id is None and i.repository == "incoming" for i in images)
    assert sum(e.kind == "retry" for e in events) == 2
    engine.dispose()


def test_cli_run_history_and_no_plan(demo: DemoCluster, db_url: str, tmp_path: Path) -> None:
    config = demo_config(demo, db_url)
    engine = make_engine(config.db)
    sources = make_sources(tmp_path / "incoming", 3, 100_000, prefix="7700")
    plan(engine, "08AQ03", sources, ["mix2"])
    env = {"SPICA_DB_URL": db_url}
    base = ["--config", str(demo.config_path), "transfer"]

    missing = invoke_spica(*base, "run", "09ZZ99", env=env)
    assert missing.returncode == 1
    assert "no plan for 09ZZ99: run `spica transfer plan 09ZZ99`" in missing.stderr

    # The copy itself in a process of its own: it takes SIGTERM and SIGINT.
    done = run_spica(*base, "run", "08AQ03", "--json", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["counts"] == {"done": 3, "failed": 0, "interrupted": 0, "lost": 0, "skipped": 0}
    assert {f["filename"] for f in out["files"]} == {s.name for s in sources}

    history = invoke_spica(*base, "history", "--runid", "08AQ03", "--json", env=env)
    assert history.returncode == 0, history.stderr
    hist = json.loads(history.stdout)
    assert [h["filename"] for h in hist] == [s.name for s in reversed(sources)]
    for h, s in zip(reversed(hist), sources, strict=True):
        checksum = file_checksum(s)[0]
        assert (h["state"], h["attempts"], h["node"]) == ("done", 1, "mix2")
        assert h["checksum"] == h["node_checksum"] == checksum
        assert h["bytes"] == s.stat().st_size and h["path"] == f"raid1/08AQ03/{s.name}"
        assert h["finished_at"] and h["error"] is None
    text = invoke_spica(*base, "history", env=env)
    assert text.returncode == 0 and sources[0].name in text.stdout
    engine.dispose()


def test_destinations_outside_a_partition_are_refused_naming_the_file(
    demo: DemoCluster, db_url: str, tmp_path: Path
) -> None:
    """A plan row pointing out of the node's root (or into its queue) fails at once, with a
    message naming the file and the destination; nothing is written on the node."""
    config = demo_config(demo, db_url)
    engine = make_engine(config.db)
    sources = make_sources(tmp_path / "incoming", 3, 10_000, prefix="6600")
    planned = plan(engine, "07CQ05", sources, ["mix1"])
    root = Path(config.node("mix1").root)
    bad = {
        planned[0].row: "/etc/spica-owned.fits",
        planned[1].row: "raid1/../queue/x_T0001.spica",
        planned[2].row: f"{root}/queue/y_T0001.spica",
    }
    with Session(engine) as session, session.begin():
        for row_id, path in bad.items():
            row = session.get(Transfer, row_id)
            assert row is not None
            row.destination_path = path
            # No partition to check against: the node's agent refuses it itself.
            row.destination_partition = None if row_id == planned[2].row else "raid1"
    report, _ = run_copy(config, "07CQ05")
    assert report.count("failed") == 3
    for p in planned:
        row = rows(engine, "07CQ05")[p.filename]
        assert (row.state, row.attempts) == ("failed", 1)
        assert row.error and row.error.startswith("destination "), row.error
    assert not list((root / "queue").glob("*_T0001.spica"))
    assert not Path("/etc/spica-owned.fits").exists()
    engine.dispose()

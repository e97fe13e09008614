"""``spica transfer watch``: planned on a schedule (immediate runids first), stopped cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.db.engine import make_engine
from spica_core.db.models import Image, Runid, Transfer
from spica_core.demo.cluster import DemoCluster
from spica_core.executor.agents import AgentExecutor
from spica_core.transfer.copy import FileEvent
from spica_core.transfer.watch import TransferWatch
from tests.test_transfer_run import demo_config
from tests.transfer_support import make_sources, partials, plan, rows


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("watch") / "cluster")
    cluster.up(1)
    try:
        yield cluster
    finally:
        cluster.down()


def waiting(engine, runid: str, sources: list[Path], mode: str) -> None:
    """Images of ``runid`` in the repository, not planned yet."""
    with Session(engine) as session, session.begin():
        run = Runid(name=runid, images=len(sources), transfer_mode=mode)
        session.add(run)
        session.flush()
        for s in sources:
            session.add(Image(filename=s.name, runid_id=run.id, repository="incoming",
                              path=str(s), filter="g"))  # fmt: skip


def test_a_round_plans_waiting_runids_and_copies_immediate_ones_first(
    demo: DemoCluster, db_url: str, tmp_path: Path
) -> None:
    config = demo_config(demo, db_url)
    engine = make_engine(config.db)
    automatic = make_sources(tmp_path / "in", 2, 50_000, prefix="1100")
    immediate = make_sources(tmp_path / "in", 2, 50_000, prefix="1200")
    manual = make_sources(tmp_path / "in", 1, 50_000, prefix="1300")
    plan(engine, "07AQ11", automatic, ["mix1"])
    with Session(engine) as session, session.begin():
        # A failed row is left to operators: the watch does not take it up.
        session.add(Transfer(filename="lost.fits", runid="07AQ11", source="/nowhere/lost.fits",
                             destination_node="mix1", destination_partition="raid1",
                             state="failed", attempts=3, error="gone"))  # fmt: skip
    waiting(engine, "07AQ10", immediate, "immediate")
    waiting(engine, "07AQ12", manual, "manual")
    asked: list[str] = []

    async def plan_step(runid: str) -> int:
        """The planner's part: every image of the runid still in a repository, to mix1."""
        asked.append(runid)
        with Session(engine) as session, session.begin():
            images = session.scalars(
                select(Image).join(Runid).where(Runid.name == runid, Image.repository.is_not(None))
            ).all()
            if session.scalar(select(Transfer.id).where(Transfer.runid == runid).limit(1)):
                return 0  # planned already
            for image in images:
                dest = f"raid1/{runid}/{image.filename}"
                session.add(Transfer(filename=image.filename, runid=runid, source=image.path,
                                     destination_node="mix1", destination_partition="raid1",
                                     destination_path=dest))  # fmt: skip
        return len(images)

    events: list[FileEvent] = []

    async def main() -> None:
        async with AgentExecutor.over_ssh(config) as executor:
            watch = TransferWatch(config, engine, executor, plan=plan_step, on_event=events.append)
            assert await watch.run(once=True) == 0

    asyncio.run(main())
    # Never the manual one, nor 07AQ11, whose images are all planned already.
    assert sorted(asked) == ["07AQ10"]
    done = [e.filename for e in events if e.kind == "done"]
    assert [n[:4] for n in done] == ["1200", "1200", "1100", "1100"]
    assert rows(engine, "07AQ11")["lost.fits"].state == "failed"
    assert rows(engine, "07AQ12") == {}
    root = Path(config.node("mix1").root)
    for s in immediate:
        assert (root / "raid1" / "07AQ10" / s.name).read_bytes() == s.read_bytes()
    engine.dispose()


def test_sigterm_leaves_files_interrupted_and_a_run_resumes_them(
    demo: DemoCluster, db_url: str, tmp_path: Path
) -> None:
    config = demo_config(demo, db_url)
    engine = make_engine(config.db)
    sources = make_sources(tmp_path / "in", 4, 4 * 1024 * 1024, prefix="1400")
    plan(engine, "07AQ13", sources, ["mix1"])
    root = Path(config.node("mix1").root)
    base = [sys.executable, "-m", "spica_tui", "--config", str(demo.config_path), "transfer"]
    env = {**os.environ, "SPICA_DB_URL": db_url}
    slow = {**env, "SPICA_FAULT_POINT": "transfer-slow-copy", "SPICA_FAULT_SECONDS": "0.2"}
    watch = subprocess.Popen([*base, "watch"], env=slow, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in partials(root)):
        assert time.monotonic() < deadline and watch.poll() is None
        time.sleep(0.02)
    watch.send_signal(signal.SIGTERM)
    _, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    states = {t.state for t in rows(engine, "07AQ13").values()}
    assert "interrupted" in states and "running" not in states, states
    assert partials(root)  # kept, to resume
    again = subprocess.run([*base, "run", "07AQ13"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resume " in again.stderr
    for s in sources:
        assert (root / "raid1" / "07AQ13" / s.name).read_bytes() == s.read_bytes()
    assert partials(root) == []
    engine.dispose()

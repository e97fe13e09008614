"""The automatic mode end to end: synthetic exposures appear in a repository, and one round
of ``spica transfer watch`` ingests, plans (the real planner) and copies them, verified."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spica_core.checksum import file_checksum
from spica_core.config import RepositoryConfig
from spica_core.db.engine import make_engine
from spica_core.db.models import Image, Node, OperatorAction, Transfer
from spica_core.demo.cluster import DemoCluster
from spica_core.executor.agents import AgentExecutor
from spica_core.ingest.fitsscan import image_filename
from spica_core.synth.runid import RunidPlan, write_runid
from spica_core.transfer.automatic import AUTOMATIC_USER, plan_step, scan_step
from spica_core.transfer.watch import TransferWatch
from tests.test_transfer_run import demo_config


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("automatic") / "cluster")
    cluster.up(2)
    try:
        yield cluster
    finally:
        cluster.down()


def one_round(config, engine, *, here: bool = False, after_plan=None) -> None:
    """One watch round through the nodes' agents over SSH. ``here``: the copies go through
    the roots on this machine (the demo's local nodes); scanning and the disks the plan
    reads still come from the agents over SSH."""

    async def main() -> None:
        async with AgentExecutor.over_ssh(config) as ssh:
            copier = AgentExecutor.here(config) if here else ssh
            watch = TransferWatch(
                config,
                engine,
                copier,
                scan=scan_step(config, engine, ssh),
                plan=plan_step(config, engine, ssh),
            )
            if after_plan is not None:
                planned = watch.plan

                async def plan_then(runid: str) -> int:
                    count = await planned(runid)
                    after_plan(runid)
                    return count

                watch.plan = plan_then
            assert await watch.run(once=True) == 0

    asyncio.run(main())


def test_a_round_ingests_plans_and_copies_new_exposures(
    demo: DemoCluster, db_url: str, tmp_path: Path
) -> None:
    repo = tmp_path / "headervalid"
    files = write_runid(RunidPlan("03AF19", 3, ccds=4), repo)
    files += write_runid(RunidPlan("03AQ98", 2, first_odometer=812001, ccds=4), repo, "fits.fz")
    config = demo_config(
        demo, db_url, repositories=[RepositoryConfig(name="headervalid", path=str(repo))]
    )
    engine = make_engine(config.db)
    one_round(config, engine)

    sums = {image_filename(f.name): file_checksum(f)[0] for f in files}
    names = {image_filename(f.name): f.name for f in files}
    roots = {n.name: Path(n.root) for n in config.nodes}
    with Session(engine) as session:
        images = session.execute(
            select(Image.filename, Image.repository, Image.path, Image.checksum, Node.name).join(
                Node, Image.node_id == Node.id, isouter=True
            )
        ).all()
        transfers = session.execute(select(Transfer.filename, Transfer.state, Transfer.checksum,
                                           Transfer.node_checksum)).all()  # fmt: skip
        audit = session.scalars(
            select(OperatorAction.targets).where(OperatorAction.user == AUTOMATIC_USER)
        ).all()
    assert sorted(i.filename for i in images) == sorted(sums)
    for image in images:
        # On a node, out of the repository, byte for byte the source (a sum SPICA re-reads).
        assert image.repository is None and image.name in roots, image
        assert image.checksum == sums[image.filename]
        arrived = (
            roots[image.name] / image.path if not image.path.startswith("/") else Path(image.path)
        )
        assert file_checksum(arrived)[0] == sums[image.filename]
        assert arrived.name == names[image.filename]  # its own name: 811001p.fits.gz
    assert {t.filename: t.state for t in transfers} == {f: "done" for f in sums}
    assert all(t.checksum == t.node_checksum == sums[t.filename] for t in transfers)
    assert sorted(t[0] for t in audit) == ["03AF19", "03AQ98"]

    # Nothing new: the next round reads no file again, plans or copies nothing, and leaves
    # every image on its node (the repository still holds the same bytes).
    one_round(config, engine)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Transfer)) == len(sums)
        again = session.scalars(
            select(OperatorAction.id).where(OperatorAction.user == AUTOMATIC_USER)
        ).all()
        after = session.execute(select(Image.filename, Image.repository, Image.node_id)).all()
    assert len(again) == len(audit)
    assert all(i.repository is None and i.node_id is not None for i in after), after
    engine.dispose()


@pytest.mark.parametrize("here", [False, True], ids=["ssh", "local-roots"])
def test_a_repository_on_a_node_is_read_and_relayed_through_the_nodes(
    demo: DemoCluster, db_url: str, tmp_path: Path, here: bool
) -> None:
    """The repository lies on mix2 (read by its agent, copied over its SFTP session): its
    files reach their partitions verified by the source node, the relay and the target."""
    config = demo_config(demo, db_url)
    holder = config.node("mix2")
    repo = Path(holder.root) / "incoming" / tmp_path.name
    files = write_runid(RunidPlan("04BQ07", 3, first_odometer=813001, ccds=4), repo)
    config = config.model_copy(
        update={
            "transfer": config.transfer.model_copy(
                update={
                    "repositories": [RepositoryConfig(name="on-mix2", path=str(repo), node="mix2")]
                }
            )
        }
    )
    engine = make_engine(config.db)
    try:
        one_round(config, engine, here=here)
        sums = {image_filename(f.name): file_checksum(f)[0] for f in files}
        with Session(engine) as session:
            transfers = session.execute(
                select(Transfer.filename, Transfer.state, Transfer.source_node,
                       Transfer.destination_node, Transfer.destination_path,
                       Transfer.node_checksum, Transfer.error)
            ).all()  # fmt: skip
        assert len(transfers) == len(sums)
        roots = {n.name: Path(n.root) for n in config.nodes}
        for t in transfers:
            assert (t.state, t.source_node) == ("done", "mix2"), t
            assert t.node_checksum == sums[t.filename]
            arrived = Path(t.destination_path)
            if not arrived.is_absolute():
                arrived = roots[t.destination_node] / arrived
            assert file_checksum(arrived)[0] == sums[t.filename]
        # The repository's files are left where they were (a copy, never a move), and a
        # second round, reading the whole repository on mix2 again, moves no image back.
        assert all(f.exists() for f in files)
        one_round(config, engine, here=here)
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(Transfer)) == len(sums)
            after = session.execute(select(Image.repository, Image.node_id)).all()
        assert all(i.repository is None and i.node_id is not None for i in after), after
    finally:
        engine.dispose()


def test_a_failed_copy_is_left_to_the_operator_never_planned_twice(
    demo: DemoCluster, db_url: str, tmp_path: Path
) -> None:
    """A file whose copy failed (its source vanished after the plan) keeps its one failed
    row: the next rounds neither plan it again nor copy it twice."""
    repo = tmp_path / "headervalid"
    files = write_runid(RunidPlan("05AQ03", 3, first_odometer=815001, ccds=4), repo)
    config = demo_config(
        demo, db_url, repositories=[RepositoryConfig(name="headervalid", path=str(repo))]
    )
    engine = make_engine(config.db)
    gone = files[0]
    try:
        one_round(config, engine, after_plan=lambda runid: gone.unlink())
        one_round(config, engine)
        one_round(config, engine)
        with Session(engine) as session:
            rows = session.execute(select(Transfer.filename, Transfer.state)).all()
            plans = session.scalars(
                select(OperatorAction.id).where(OperatorAction.user == AUTOMATIC_USER)
            ).all()
        states = sorted(r.state for r in rows)
        assert states == ["done", "done", "failed"], rows
        assert [r.filename for r in rows if r.state == "failed"] == [image_filename(gone.name)]
        assert len(plans) == 1
    finally:
        engine.dispose()

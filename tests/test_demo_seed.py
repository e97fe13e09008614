"""The demo's example work: seeded once through the agent and the operations API, then run
by the real demo daemons until every state shows (pending, running, completed, failed)."""

from __future__ import annotations

import contextlib
import importlib.util
import time
from pathlib import Path

import pytest

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.demo.seed import EXAMPLE_STEP, FLAT, example_stacks, seed_demo
from spica_core.read_model import StackSelection, list_stacks, state_counts

pytestmark = pytest.mark.timeout(600)
#: Generous for a loaded machine: on a quiet one every state shows within ~15 s.
WAIT = 240.0


@contextlib.contextmanager
def seeded_demo(directory: Path, nodes: int, *, daemons: bool):
    """A demo cluster of ``nodes`` with its dbspica prepared and seeded (no problem)."""
    cluster = DemoCluster(directory)
    try:
        cluster.up(nodes, daemons=daemons)
        config = load_config(cluster.config_path)
        prepare_database(config, create=True)
        result = seed_demo(config)
        assert result.problems == []
        yield cluster, config, result
    finally:
        cluster.down()


def test_examples_cover_every_kind_on_any_cluster_size(tmp_path) -> None:
    for n in (1, 2, 4, 8):
        cluster = DemoCluster(tmp_path / f"c{n}")
        cluster.up(n, daemons=False)
        try:
            examples = example_stacks(load_config(cluster.config_path))
        finally:
            cluster.down()
        kinds = [e.kind for e in examples]
        assert kinds.count("failing") == 1 and "long" in kinds and "quick" in kinds, n
        assert len({e.name for e in examples}) == len(examples)
        if n >= 4:
            assert "waiting" in kinds
    assert 24 <= len(examples) <= 48  # "a few dozen" on the default 8 nodes


def test_seeded_demo_shows_every_state(tmp_path) -> None:
    if importlib.util.find_spec("spica_core.daemon.service") is None:
        pytest.skip("the node daemon (spica_core.daemon.service) is not there yet")
    with seeded_demo(tmp_path / "demo", 4, daemons=True) as (_, config, result):
        assert result.created == result.staged == result.launched == len(example_stacks(config))
        engine = make_engine(config.db)
        deadline = time.monotonic() + WAIT
        wanted = ("pending", "running", "completed", "failed")
        while not all(state_counts(engine)[s] for s in wanted):
            assert time.monotonic() < deadline, f"states after {WAIT:.0f} s: {state_counts(engine)}"
            time.sleep(0.2)
        failed = list_stacks(engine, StackSelection(state=None, step=EXAMPLE_STEP, match="_flat$"))
        assert failed and failed[0].state == "failed"
        assert "missing master flat" in (failed[0].error or "")
        assert FLAT in (failed[0].error or "")
        again = seed_demo(config)  # seeds once
        assert (again.created, again.launched) == (0, 0)
        engine.dispose()


def test_demo_images_are_placed_by_the_planner_and_really_copied(tmp_path) -> None:
    """Every demo image on a node got there through a plan and a verified copy: a ``done``
    transfer row to that node whose two checksums match the image's and the file on the
    node; the runid distribution counts exactly those images; the waiting runid is still
    all in the repository, unplanned; the stacks' inputs are these images."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from spica_core.checksum import file_checksum
    from spica_core.db.models import Image, Node, Runid, StackFile, Transfer
    from spica_core.demo.repository import EXPOSURES, RUNIDS, WAITING_RUNID
    from spica_core.read_model import transfer_distribution

    with seeded_demo(tmp_path / "demo", 3, daemons=False) as (cluster, config, result):
        placed = EXPOSURES * (len(RUNIDS) - 1)
        assert result.ingested == EXPOSURES * len(RUNIDS)
        assert result.planned == result.transferred == placed
        engine = make_engine(config.db)
        with Session(engine) as s:
            on_nodes = s.execute(
                select(Image, Node.name, Runid.name)
                .join(Node, Image.node_id == Node.id)
                .join(Runid, Image.runid_id == Runid.id)
            ).all()
            assert len(on_nodes) == placed
            per_cell: dict[tuple[str, str], int] = {}
            for image, node, runid in on_nodes:
                rows = s.scalars(select(Transfer).where(Transfer.image_id == image.id)).all()
                assert [(t.state, t.destination_node) for t in rows] == [("done", node)]
                t = rows[0]
                assert t.checksum == t.node_checksum == image.checksum
                assert image.path == t.destination_path and image.repository is None
                on_disk = Path(t.destination_path)
                assert on_disk.is_relative_to(cluster.node_root(node))
                assert file_checksum(on_disk) == (image.checksum, image.bytes)
                per_cell[(runid, node)] = per_cell.get((runid, node), 0) + 1
            waiting = s.scalars(select(Image).join(Runid).where(Runid.name == WAITING_RUNID)).all()
            assert len(waiting) == EXPOSURES
            assert all(i.repository == "incoming" and i.node_id is None for i in waiting)
            assert not s.scalar(
                select(func.count()).select_from(Transfer).where(Transfer.runid == WAITING_RUNID)
            )
            inputs = s.scalars(select(StackFile.image_id)).all()
            assert inputs and set(inputs) <= {i.id for i in s.scalars(select(Image))}
        dist = transfer_distribution(engine, nodes=[n.name for n in config.nodes])
        assert dist.files == per_cell
        assert len({node for _, node in per_cell}) > 1  # the plans spread the runids
        again = seed_demo(config)
        assert (again.written, again.ingested, again.planned, again.transferred) == (0, 0, 0, 0)
        engine.dispose()

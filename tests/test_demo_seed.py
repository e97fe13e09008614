"""The demo's example work: seeded once through the agent and the operations API, then run
by the real demo daemons until every state shows (pending, running, completed, failed)."""

from __future__ import annotations

import importlib.util
import time

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
    cluster = DemoCluster(tmp_path / "demo")
    try:
        cluster.up(4, daemons=True)
        config = load_config(cluster.config_path)
        prepare_database(config, create=True)
        result = seed_demo(config)
        assert result.problems == []
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
    finally:
        cluster.down()

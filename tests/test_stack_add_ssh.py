"""``stack add`` for a node whose root is not on this machine: through the agent over SSH."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Stack
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.stack_add import StackExists, add_stack


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("add") / "cluster")
    cluster.up(1)
    try:
        yield cluster
    finally:
        cluster.down()


def test_add_and_launch_over_ssh(demo: DemoCluster) -> None:
    config = load_config(demo.config_path)
    prepare_database(config, create=True)
    engine = make_engine(config.db)
    added = add_stack(
        engine,
        config,
        "adhoc_T0001",
        "mix1",
        b"echo one\n# note\necho two\n",
        step="adhoc",
        priority=3,
        launch=True,
        by="laurent",
        over_ssh=True,
    )
    assert (added.state, added.lines, added.commands) == ("pending", 3, 2)
    root = demo.node_root("mix1")
    assert (root / "stacks" / "adhoc_T0001" / "commands.sh").read_text() == (
        "echo one\n# note\necho two\n"
    )
    assert '"by": "laurent"' in (root / "queue" / "adhoc_T0001.spica").read_text()
    with Session(engine) as s:
        row = s.scalars(select(Stack).where(Stack.name == "adhoc_T0001")).one()
        assert (row.state, row.step, row.priority, row.lines) == ("pending", "adhoc", 3, 3)
    with pytest.raises(StackExists):
        add_stack(engine, config, "adhoc_T0001", "mix1", b"true\n", over_ssh=True)
    # Files on the node but no row (a half-removed stack): refused by the node, nothing added.
    (root / "queue" / "ghost_T0001.processed").write_text("{}")
    with pytest.raises(StackExists, match="on node mix1"):
        add_stack(engine, config, "ghost_T0001", "mix1", b"true\n", over_ssh=True)
    with Session(engine) as s:
        assert s.scalars(select(Stack).where(Stack.name == "ghost_T0001")).one_or_none() is None
    engine.dispose()

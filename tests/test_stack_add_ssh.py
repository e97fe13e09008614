"""``stack add`` for a node whose root is not on this machine: through the agent over SSH."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import OperatorAction, Stack
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
        # Launched as every launch is: an audited intent, applied.
        audits = s.scalars(select(OperatorAction).where(OperatorAction.action == "launch"))
        (audit,) = [a for a in audits if a.targets == ["adhoc_T0001"]]
        assert (audit.user, audit.result, audit.dry_run) == ("laurent", "applied", False)
    with pytest.raises(StackExists):
        add_stack(engine, config, "adhoc_T0001", "mix1", b"true\n", over_ssh=True)
    # Files on the node but no row (a half-removed stack): refused by the node, nothing added.
    (root / "queue" / "ghost_T0001.processed").write_text("{}")
    with pytest.raises(StackExists, match="on node mix1"):
        add_stack(engine, config, "ghost_T0001", "mix1", b"true\n", over_ssh=True)
    with Session(engine) as s:
        assert s.scalars(select(Stack).where(Stack.name == "ghost_T0001")).one_or_none() is None
    engine.dispose()


def test_the_commands_limit_and_line_ends_are_the_same_over_ssh(demo: DemoCluster) -> None:
    """The local limit holds through the agent: a file of exactly MAX_COMMANDS_BYTES, full
    of what JSON escapes, is staged byte for byte; one byte more is refused, by the client
    and by the agent itself; CRLF arrives as LF, a stray CR is refused naming the line."""
    import asyncio

    from spica_core.errors import UsageError
    from spica_core.executor.agents import AgentExecutor
    from spica_core.node.layout import MAX_COMMANDS_BYTES, NodeLayout
    from spica_core.node.protocol import ErrorCode, ProtocolError
    from spica_core.node.stack_files import read_commands

    config = load_config(demo.config_path)
    prepare_database(config, create=True)
    engine = make_engine(config.db)
    root = demo.node_root("mix1")
    line = "echo 'ligne \"\\ é\t\x01 ✓'\n".encode()
    body = line * (MAX_COMMANDS_BYTES // len(line))
    at_limit = body + b"#" * (MAX_COMMANDS_BYTES - len(body))
    added = add_stack(engine, config, "big_T0001", "mix1", at_limit, over_ssh=True)
    assert added.lines == MAX_COMMANDS_BYTES // len(line) + 1
    assert (root / "stacks" / "big_T0001" / "commands.sh").read_bytes() == at_limit
    # … and the node's daemon reads it with the same limit.
    assert len(read_commands(NodeLayout(root), "big_T0001")) == added.lines

    with pytest.raises(UsageError, match=f"larger than {MAX_COMMANDS_BYTES} bytes"):
        add_stack(engine, config, "over_T0001", "mix1", at_limit + b"\n", over_ssh=True)

    async def stage_over_limit() -> None:
        async with AgentExecutor.over_ssh(config, ["mix1"]) as executor:
            with pytest.raises(ProtocolError) as info:
                await executor.stage("mix1", "over_T0001", at_limit + b"\n")
            assert info.value.code == ErrorCode.BAD_ARGS
            assert f"at most {MAX_COMMANDS_BYTES}" in info.value.message

    asyncio.run(stage_over_limit())
    assert not (root / "stacks" / "over_T0001").exists()

    add_stack(engine, config, "dos_T0001", "mix1", b"echo a\r\necho b\r\n", over_ssh=True)
    assert (root / "stacks" / "dos_T0001" / "commands.sh").read_bytes() == b"echo a\necho b\n"
    with pytest.raises(UsageError, match=r"carriage return.*line 2"):
        add_stack(engine, config, "mac_T0001", "mix1", b"echo a\necho b\rc\n", over_ssh=True)
    with Session(engine) as s:
        names = set(s.scalars(select(Stack.name)))
    assert {"big_T0001", "dos_T0001"} <= names and not {"over_T0001", "mac_T0001"} & names
    engine.dispose()


def test_a_row_that_cannot_be_written_leaves_nothing_staged_on_the_node(
    demo: DemoCluster, tmp_path
) -> None:
    """dbspica read-only: ``stack add`` over SSH fails on the row, and the commands it staged
    through the agent are taken off the node again (no half-made stack)."""
    from sqlalchemy.exc import OperationalError

    config = load_config(demo.config_path)
    prepare_database(config, create=True)
    path = config.db.url.removeprefix("sqlite:///")
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"  # root ignores file modes
    ro = config.model_copy(update={"db": config.db.model_copy(update={"url": read_only})})
    engine = make_engine(ro.db)
    root = demo.node_root("mix1")
    with pytest.raises(OperationalError, match="readonly"):
        add_stack(engine, ro, "unwritten_T0001", "mix1", b"true\n", over_ssh=True, by="op")
    assert not (root / "stacks" / "unwritten_T0001").exists()
    assert not list((root / "queue").glob("unwritten_T0001.*"))
    engine.dispose()
    # The name is free for a real add afterwards.
    engine = make_engine(config.db)
    added = add_stack(engine, config, "unwritten_T0001", "mix1", b"true\n", over_ssh=True)
    assert added.state == "planned"
    engine.dispose()

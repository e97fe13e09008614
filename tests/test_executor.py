"""The executor seam over real node roots: typed changes in, typed answers out, the
agent's refusals and exclusivity unchanged, and what node agents cannot do said so."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, TypeVar

import pytest

from spica_core.executor import (
    Capability,
    ErrorCode,
    Executor,
    Launch,
    NotSupported,
    ProtocolError,
    QueueEntry,
    Remove,
    Requeue,
    StackChange,
    Unlock,
)
from spica_core.executor.agents import AgentExecutor
from spica_core.node import protocol as proto
from spica_core.node.protocol import Args
from spica_core.states import StackState
from tests.daemon_support import NODE, make_node

R = TypeVar("R")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_agent_executor_plans_applies_and_refuses_as_the_agent(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = make_node(tmp_path, sqlite_url)
    executor = AgentExecutor.here(env.config())
    assert isinstance(executor, Executor)
    assert NODE in executor.hosts

    staged = _run(executor.stage(NODE, "EXE_1", b"echo one\necho two\n"))
    assert (staged.stack, staged.lines, staged.commands) == ("EXE_1", 2, "stacks/EXE_1/commands.sh")
    assert (env.stack_dir("EXE_1") / "commands.sh").read_bytes() == b"echo one\necho two\n"

    launch = Launch(NODE, "EXE_1", "ada", priority=4)
    planned = _run(executor.plan(launch))
    assert isinstance(planned, StackChange)
    assert (planned.from_, planned.to, planned.create) == (
        "planned",
        "pending",
        "queue/EXE_1.spica",
    )
    assert env.state("EXE_1") is None, "a plan changes nothing"

    done = _run(executor.apply(launch))
    assert done.to == "pending"
    record = json.loads((env.queue / "EXE_1.spica").read_text())
    assert (record["by"], record["priority"]) == ("ada", 4)

    with pytest.raises(ProtocolError) as again:  # exclusive: a second launch is refused
        _run(executor.apply(launch))
    assert again.value.code == ErrorCode.WRONG_STATE
    assert json.loads((env.queue / "EXE_1.spica").read_text()) == record

    (entry,) = [e for e in _run(executor.units(NODE, [StackState.PENDING])) if e.stack == "EXE_1"]
    assert isinstance(entry, QueueEntry)
    assert entry.state is StackState.PENDING and entry.launch and entry.launch.by == "ada"

    with pytest.raises(ProtocolError) as staged_again:
        _run(executor.stage(NODE, "EXE_1", b"echo other\n"))
    assert staged_again.value.code == ErrorCode.WRONG_STATE
    assert "queue/EXE_1.spica" in staged_again.value.message

    for wrong in (Requeue(NODE, "EXE_1", "ada"), Unlock(NODE, "EXE_1", "ada")):
        with pytest.raises(ProtocolError) as refused:
            _run(executor.plan(wrong))
        assert refused.value.code == ErrorCode.WRONG_STATE

    removed = _run(executor.apply(Remove(NODE, "EXE_1", "ada")))
    assert (removed.from_, removed.to) == ("pending", "removed")
    assert env.state("EXE_1") is None and not env.stack_dir("EXE_1").exists()


def test_agents_cannot_hold_and_say_so(tmp_path: Path, sqlite_url: str) -> None:
    env = make_node(tmp_path, sqlite_url)
    executor = AgentExecutor.here(env.config())
    assert Capability.HOLD not in executor.capabilities
    assert {Capability.STAGE, Capability.TAIL} <= executor.capabilities
    with pytest.raises(NotSupported, match="cannot hold"):
        _run(executor.hold(NODE, "EXE_2", "ada"))
    with pytest.raises(NotSupported):
        _run(executor.release(NODE, "EXE_2", "ada"))
    with pytest.raises(NotSupported, match="no SSH pool"):
        _run(executor.snapshot())


class _OldAgent:
    """A node answering in a shape this console does not know (an older agent): its answer
    line goes through the client's own decoding."""

    async def request(self, node: str, args: Args[R]) -> R:
        line = (
            b'{"id":1,"ok":true,"result":{"stack":"S","from":"planned","to":"pending",'
            b'"created":"queue/S.spica"}}'
        )
        return proto.result_of(proto.decode_response(line), type(args))


def test_an_answer_of_the_wrong_shape_is_refused_naming_the_field() -> None:
    executor = AgentExecutor(_OldAgent(), ["mix1"])
    with pytest.raises(ProtocolError) as info:
        _run(executor.plan(Launch("mix1", "S", "ada")))
    assert info.value.code == ErrorCode.BAD_ANSWER
    assert "node mix1: launch answer" in info.value.message
    assert "created" in info.value.message

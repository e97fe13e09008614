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


# ------------------------------------------------------------------ many changes at once


class _Counted:
    """The in-process agents, each request counted by verb (what went over the wire)."""

    def __init__(self, inner: Any, refuse_moves: bool = False) -> None:
        self.inner = inner
        self.verbs: list[str] = []
        self.refuse_moves = refuse_moves

    async def request(self, node: str, args: Args[R]) -> R:
        self.verbs.append(str(type(args).VERB))
        if self.refuse_moves and isinstance(args, proto.MovesArgs):
            # What an agent from before ``moves`` answers (its verb table has no such verb).
            raise ProtocolError(ErrorCode.UNKNOWN_VERB, "unknown verb 'moves'")
        return await self.inner.request(node, args)  # type: ignore[no-any-return]


def _staged(env: Any, executor: AgentExecutor, names: list[str]) -> None:
    for name in names:
        _run(executor.stage(NODE, name, b"true\n"))


@pytest.mark.parametrize("older_agent", [False, True], ids=["moves", "older-agent"])
def test_many_changes_are_answered_each_on_its_own_in_order(
    tmp_path: Path, sqlite_url: str, older_agent: bool
) -> None:
    from spica_core.local_node import LocalNodes

    env = make_node(tmp_path, sqlite_url)
    nodes = _Counted(LocalNodes(env.config()), refuse_moves=older_agent)
    executor = AgentExecutor(nodes, [NODE], batch=3)
    names = [f"MANY_{i}" for i in range(5)]
    _staged(env, executor, names)
    nodes.verbs.clear()
    changes = [
        Launch(NODE, "MANY_0", "ada", priority=2),
        Launch(NODE, "MANY_1", "ada"),
        Launch(NODE, "MANY_1", "bob"),  # the same stack again in the same batch: exclusive
        Requeue(NODE, "MANY_2", "ada"),  # planned, not failed
        Launch(NODE, "bad/name", "ada"),
        Launch(NODE, "MANY_3", "ada"),
        Remove(NODE, "MANY_4", "ada"),
    ]
    planned = _run(executor.plan_many(changes))
    assert [type(a).__name__ for a in planned] == [
        "StackChange",
        "StackChange",
        "StackChange",  # a dry run: the first launch has not happened
        "ProtocolError",
        "ProtocolError",
        "StackChange",
        "StackChange",
    ]
    assert all(env.state(n) is None for n in names), "a plan changes nothing"

    answers = _run(executor.apply_many(changes))
    codes = [a.code if isinstance(a, ProtocolError) else a.to for a in answers]
    assert codes == [
        "pending",
        "pending",
        ErrorCode.WRONG_STATE,
        ErrorCode.WRONG_STATE,
        ErrorCode.BAD_NAME,
        "pending",
        "removed",
    ]
    assert [a.stack for a in answers if isinstance(a, StackChange)] == [
        "MANY_0",
        "MANY_1",
        "MANY_3",
        "MANY_4",
    ]
    assert json.loads((env.queue / "MANY_1.spica").read_text())["by"] == "ada"
    assert [env.state(n) for n in names] == ["spica", "spica", None, "spica", None]
    if older_agent:  # refused as a whole, then each move as its own verb
        assert nodes.verbs[:4] == ["moves", "launch", "launch", "launch"]
        assert nodes.verbs.count("moves") == 1 and len(nodes.verbs) == 1 + 2 * len(changes)
    else:  # 7 changes in batches of 3: three requests for the plan, three for the apply
        assert nodes.verbs == ["moves"] * 6


def test_a_batch_of_one_and_one_node_at_a_time_sends_each_change_alone(
    tmp_path: Path, sqlite_url: str
) -> None:
    from spica_core.local_node import LocalNodes

    env = make_node(tmp_path, sqlite_url)
    nodes = _Counted(LocalNodes(env.config()))
    executor = AgentExecutor(nodes, [NODE], batch=1, concurrency=1)
    _staged(env, executor, ["ONE_0", "ONE_1"])
    nodes.verbs.clear()
    answers = _run(
        executor.apply_many([Launch(NODE, "ONE_0", "ada"), Launch(NODE, "ONE_1", "ada")])
    )
    assert [a.to for a in answers if isinstance(a, StackChange)] == ["pending", "pending"]
    assert nodes.verbs == ["launch", "launch"]
    with pytest.raises(ValueError, match="batch must be 1 to"):
        AgentExecutor(nodes, [NODE], batch=0)


def test_batches_keep_under_the_item_count_and_the_request_size() -> None:
    small = [proto.LaunchMove(stack=f"S{i}", by="ada") for i in range(7)]
    assert proto.move_batches(small, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    # Removes listing many inputs: the request line, not the count, bounds the batch.
    purge = [f"raid1/in/{'x' * 200}_{n}.fits" for n in range(1000)]
    big = [proto.RemoveMove(stack=f"B{i}", by="ada", purge=purge) for i in range(12)]
    batches = proto.move_batches(big, proto.MAX_MOVES)
    assert len(batches) > 1 and [i for b in batches for i in b] == list(range(12))
    for batch in batches:
        line = proto.encode_request(1, proto.MovesArgs(items=[big[i] for i in batch]))
        assert len(line) <= proto.MAX_REQUEST_BYTES
    huge = proto.RemoveMove(stack="H", by="ada", purge=purge * 8)
    with pytest.raises(ValueError, match="the H move is over"):
        proto.move_batches([huge])


def test_an_answer_with_the_wrong_number_of_results_is_refused() -> None:
    change = StackChange(stack="S", from_="failed", to="pending")
    two = proto.MovesResult(results=[proto.MoveAnswer(change=change)] * 2)
    with pytest.raises(ProtocolError, match="2 results for 3 items") as info:
        proto.move_answers(two, 3)
    assert info.value.code == ErrorCode.BAD_ANSWER
    empty = proto.MovesResult(results=[proto.MoveAnswer()])
    with pytest.raises(ProtocolError, match=r"`results\[0\]`: give `change` or `error`"):
        proto.move_answers(empty, 1)

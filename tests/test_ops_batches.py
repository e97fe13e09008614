"""Bulk operations in batches, end to end: demo nodes over real SSH, every node asked at once
and each in ``moves`` batches, dbspica on SQLite and MariaDB. Each stack's outcome and audit
row is its own; a node lost mid-batch leaves exactly its batch unknown, for reconcile."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig, load_config
from spica_core.db.models import Node, OperatorAction, Stack
from spica_core.db.registry import register_nodes
from spica_core.demo.cluster import DemoCluster
from spica_core.executor.agents import AgentExecutor
from spica_core.operations import audit
from spica_core.operations.model import (
    ItemResult,
    OpAction,
    OperationRequest,
    Outcome,
    Plan,
    Selection,
    exit_code,
)
from spica_core.operations.session import Operations
from tests.conftest import invoke_spica
from tests.daemon_support import plant_failed, toml_string, wait_for

NODES = ("mix1", "mix2", "mix3")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DemoCluster]:
    """Three passive nodes (no daemon moves a queue file but the test), for this test alone:
    reconcile looks at every node."""
    demo = DemoCluster(tmp_path / "cluster")
    demo.up(len(NODES))
    try:
        yield demo
    finally:
        demo.down()


def _config(demo: DemoCluster, db_url: str, name: str, slow: str | None = None) -> Path:
    """The demo's configuration on ``db_url``; with ``slow``, that node's agent answers a
    batch of moves only 8 s after carrying it out (the time to kill its server)."""
    text = demo.config_path.read_text()
    text = re.sub(r'(?m)^url = ".*"$', f"url = {toml_string(db_url)}", text, count=1)
    if slow is not None:
        head, *sections = text.split("[[nodes]]")
        sections = [
            s.replace(
                'agent_command = "',
                'agent_command = "env SPICA_FAULT_POINT=agent-slow-answer SPICA_FAULT_SECONDS=8 ',
            )
            if f'name = "{slow}"' in s
            else s
            for s in sections
        ]
        text = "[[nodes]]".join([head, *sections])
    path = demo.directory / name
    path.write_text(text)
    return path


def _failed(demo: DemoCluster, engine: Engine, node: str, names: list[str]) -> None:
    """Failed stacks as a daemon leaves them: queue file, progress, dbspica row."""
    with Session(engine) as s, s.begin():
        node_row = s.scalars(select(Node).where(Node.name == node)).one()
        for name in names:
            plant_failed(demo.node_root(node), name)
            s.add(Stack(name=name, node=node_row, state="failed", lines=2, failed_line=2))


def _states(engine: Engine, names: list[str]) -> dict[str, str]:
    with Session(engine) as s:
        return dict(s.execute(select(Stack.name, Stack.state).where(Stack.name.in_(names))).all())


def _intents(engine: Engine, names: list[str], action: str = "requeue") -> dict[str, list[str]]:
    """The results of each stack's audit rows of ``action`` (by their ``targets``)."""
    out: dict[str, list[str]] = {n: [] for n in names}
    with Session(engine) as s:
        rows = select(OperatorAction).where(
            OperatorAction.dry_run.is_(False), OperatorAction.action == action
        )
        for row in s.scalars(rows):
            if len(row.targets) == 1 and row.targets[0] in out:
                out[row.targets[0]].append(row.result)
    return out


def _queue(demo: DemoCluster, node: str, name: str) -> list[str]:
    queue = demo.node_root(node) / "queue"
    return sorted(p.suffix for p in queue.iterdir() if p.name.startswith(name + "."))


async def _plan_and_apply(
    config: SpicaConfig, engine: Engine, request: OperationRequest, batch: int, between=None
) -> tuple[Plan, list[ItemResult]]:
    async with AgentExecutor.over_ssh(config) as ssh:
        executor = AgentExecutor(ssh.pool, batch=batch)
        ops = Operations(config, engine, executor)
        plan = await ops.plan(request)
        if between is not None:
            await asyncio.to_thread(between)
        return plan, await ops.apply(plan)


def _tag(db_url: str) -> str:
    return "my" if db_url.startswith("mysql") else "sq"


def test_a_mixed_batch_answers_each_stack_on_its_own(cluster, db_engine, db_url) -> None:
    config = load_config(_config(cluster, db_url, f"mixed_{_tag(db_url)}.toml"))
    register_nodes(db_engine, config)
    names = {n: [f"mixed_{_tag(db_url)}_{n}_{i}" for i in range(6)] for n in NODES}
    for node in NODES:
        _failed(cluster, db_engine, node, names[node])
    everyone = [s for n in NODES for s in names[n]]
    request = OperationRequest(
        OpAction.REQUEUE, Selection(names=(*everyone, "mixed_nosuch")), "ada"
    )
    won, gone, odd = names["mix1"][0], names["mix3"][5], names["mix2"][2]

    def another_operator() -> None:
        """Between plan and apply: one stack requeued by hand, one queue file gone, one
        made a link leading out of the node's root."""
        queue = cluster.node_root("mix1") / "queue"
        (queue / f"{won}.error").rename(queue / f"{won}.spica")
        (cluster.node_root("mix3") / "queue" / f"{gone}.error").unlink()
        link = cluster.node_root("mix2") / "queue" / f"{odd}.error"
        link.unlink()
        link.symlink_to(cluster.directory / "elsewhere.error")

    plan, results = asyncio.run(
        _plan_and_apply(config, db_engine, request, batch=4, between=another_operator)
    )
    assert [i.stack for i in plan.doable] == everyone
    assert [i.stack for i in plan.refused] == ["mixed_nosuch"]
    assert "requeue 18 stacks; 1 refused (as ada):" in plan.render()

    by_stack = {r.stack: r for r in results}
    assert [r.stack for r in results] == [*everyone, "mixed_nosuch"], "the plan's order"
    assert by_stack[won].outcome is Outcome.REFUSED and "node mix1" in by_stack[won].message
    assert by_stack[gone].outcome is Outcome.REFUSED, by_stack[gone]
    assert by_stack[gone].message.startswith(f"node mix3: stack {gone} is planned")
    assert by_stack[odd].outcome is Outcome.FAILED, by_stack[odd]
    assert by_stack[odd].message.startswith("node mix2: ")
    applied = [s for s in everyone if s not in (won, gone, odd)]
    assert all(by_stack[s].outcome is Outcome.APPLIED for s in applied), results
    assert by_stack[applied[0]].message.endswith("failed -> pending on mix1, resumes at line 2")

    assert _states(db_engine, everyone) == {
        s: "failed" if s in (won, gone, odd) else "pending" for s in everyone
    }
    assert all(_queue(cluster, "mix3", s) == [".spica"] for s in names["mix3"][:5])
    intents = _intents(db_engine, [*everyone, "mixed_nosuch"])
    assert intents[won] == intents[gone] == ["refused"] and intents[odd] == ["failed"]
    assert all(intents[s] == ["applied"] for s in applied), intents
    assert intents["mixed_nosuch"] == ["refused"]  # the plan's refused part, one row


def test_a_node_lost_mid_batch_leaves_its_batch_unknown_and_reconcile_converges(
    cluster, db_engine, db_url
) -> None:
    tag = _tag(db_url)
    slow = load_config(_config(cluster, db_url, f"slow_{tag}.toml", slow="mix2"))
    plain = _config(cluster, db_url, f"plain_{tag}.toml")
    register_nodes(db_engine, slow)
    names = {n: [f"lost_{tag}_{n}_{i}" for i in range(6)] for n in NODES}
    for node in NODES:
        _failed(cluster, db_engine, node, names[node])
    everyone = [s for n in NODES for s in names[n]]
    first_batch = names["mix2"][:4]
    request = OperationRequest(OpAction.REQUEUE, Selection(names=tuple(everyone)), "ada")

    async def apply_and_kill() -> list[ItemResult]:
        async with AgentExecutor.over_ssh(slow) as ssh:
            ops = Operations(slow, db_engine, AgentExecutor(ssh.pool, batch=4))
            plan = await ops.plan(request)
            assert len(plan.doable) == len(everyone)

            def kill_after_the_commit() -> None:
                wait_for(
                    lambda: all(_queue(cluster, "mix2", s) == [".spica"] for s in first_batch),
                    60,
                    "mix2's first batch renamed",
                )
                assert cluster.kill_node("mix2")

            results, _ = await asyncio.gather(
                ops.apply(plan), asyncio.to_thread(kill_after_the_commit)
            )
            return results

    try:
        results = asyncio.run(apply_and_kill())
    finally:
        cluster.start_node("mix2")
    by_stack = {r.stack: r for r in results}
    for node in ("mix1", "mix3"):
        assert all(by_stack[s].outcome is Outcome.APPLIED for s in names[node]), results
    for s in first_batch:
        assert by_stack[s].outcome is Outcome.UNKNOWN, by_stack[s]
        assert "spica reconcile" in by_stack[s].message
    for s in names["mix2"][4:]:
        assert by_stack[s].outcome is Outcome.FAILED and by_stack[s].unreachable
        assert "not sent" in by_stack[s].message
        assert _queue(cluster, "mix2", s) == [".error"], "never sent, never moved"
    intents = _intents(db_engine, everyone)
    assert all(intents[s] == ["pending"] for s in first_batch), intents
    assert {s: intents[s] for s in names["mix2"][4:]} == {s: ["failed"] for s in names["mix2"][4:]}
    assert exit_code(results) == 3

    fixed = invoke_spica("--config", str(plain), "reconcile", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert _intents(db_engine, first_batch) == {s: ["applied"] for s in first_batch}
    assert _intents(db_engine, first_batch, "reconcile") == {s: ["applied"] for s in first_batch}
    states = _states(db_engine, everyone)
    assert states == {s: "failed" if s in names["mix2"][4:] else "pending" for s in everyone}
    again = invoke_spica("--config", str(plain), "reconcile", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["drift"] == []


def _refuse_updates_of(engine: Engine, stack: str) -> None:
    """A trigger making dbspica refuse any update of ``stack``'s row (a real error)."""
    from sqlalchemy import text

    if engine.dialect.name == "sqlite":
        ddl = (
            f"CREATE TRIGGER refuse_one BEFORE UPDATE ON stack WHEN NEW.name = '{stack}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
    else:
        ddl = (
            f"CREATE TRIGGER refuse_one BEFORE UPDATE ON stack FOR EACH ROW BEGIN "
            f"IF NEW.name = '{stack}' THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by a trigger'; END IF; END"
        )
    with engine.begin() as conn:
        conn.execute(text(ddl))


def test_a_row_dbspica_refuses_is_partial_and_only_that_one(cluster, db_engine, db_url) -> None:
    tag = _tag(db_url)
    config = load_config(_config(cluster, db_url, f"partial_{tag}.toml"))
    register_nodes(db_engine, config)
    names = [f"partial_{tag}_{i}" for i in range(5)]
    _failed(cluster, db_engine, "mix1", names)
    _failed(cluster, db_engine, "mix3", [f"{n}_b" for n in names])
    everyone = [*names, *(f"{n}_b" for n in names)]
    bad = names[2]
    _refuse_updates_of(db_engine, bad)
    request = OperationRequest(OpAction.REQUEUE, Selection(names=tuple(everyone)), "ada")
    _, results = asyncio.run(_plan_and_apply(config, db_engine, request, batch=3))

    by_stack = {r.stack: r for r in results}
    assert by_stack[bad].outcome is Outcome.PARTIAL, by_stack[bad]
    assert "dbspica not updated" in by_stack[bad].message
    assert "spica reconcile --fix finishes it" in by_stack[bad].message
    others = [s for s in everyone if s != bad]
    assert all(by_stack[s].outcome is Outcome.APPLIED for s in others), results
    assert _states(db_engine, everyone) == {
        s: "failed" if s == bad else "pending" for s in everyone
    }
    intents = _intents(db_engine, everyone)
    assert intents[bad] == ["pending"], "left for reconcile, which sees the node's rename"
    assert all(intents[s] == ["applied"] for s in others), intents
    assert _queue(cluster, "mix1", bad) == [".spica"]


def test_intents_are_opened_and_closed_in_bulk_each_with_its_own_row(db_engine) -> None:
    """Hundreds of intents are one INSERT and an UPDATE per outcome and message: each row
    still gets its own id (in order), result and message added to its own JSON detail,
    across the statements' chunk borders."""
    count = 2 * audit._ROWS_PER_STATEMENT + 7
    rows = [
        {
            "user": "ada",
            "action": "requeue",
            "targets": [f"bulk_{i}"],
            "dry_run": False,
            "plan": f"requeue bulk_{i}",
            "result": "pending",
            "detail": {"node": f"n{i % 3}", "attempt": i if i % 2 else None, "from_start": False},
        }
        for i in range(count)
    ]
    with Session(db_engine) as s, s.begin():
        ids = audit.open_intents(s, rows)
    assert len(set(ids)) == count
    outcomes = ["applied", "applied", "refused", "failed"]
    messages = ["requeue by ada", 'é "quoted" {} \\ $.x', "node n1: no"]
    closes = [(id_, outcomes[i % 4], messages[i % 3]) for i, id_ in enumerate(ids)]
    with Session(db_engine) as s, s.begin():
        audit.close_intents(s, closes[1:])  # the first stays pending
    with Session(db_engine) as s:
        query = select(OperatorAction).where(OperatorAction.id.in_(ids))
        found = {r.id: r for r in s.scalars(query)}
    assert [found[i].targets for i in ids] == [r["targets"] for r in rows]
    assert (found[ids[0]].result, found[ids[0]].detail) == ("pending", rows[0]["detail"])
    assert [(found[i].result, found[i].detail) for i, _, _ in closes[1:]] == [
        (result, {**rows[k + 1]["detail"], "message": message})
        for k, (_, result, message) in enumerate(closes[1:])
    ]
    assert all(found[i].created_at is not None for i in ids)

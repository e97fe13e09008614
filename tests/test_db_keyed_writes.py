"""MariaDB: a compare-and-set write of one row never waits on another row's open write.

``UPDATE … WHERE name = 'P1' AND state = 'planned'`` when P1 is the only planned stack: the
statistics make the ``state`` index look as selective as the unique name, and InnoDB reading
through it takes next-key locks there, the gap where another writer's row enters its new
state included. Without the hint of spica_core.db.keyed the second writer waits for the
first until its lock wait times out (four racing writers deadlocked); with it each write
locks only the rows it names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import ClusterSnapshot, Liveness, NodeSnapshot
from spica_core.db import stack_state
from spica_core.db.keyed import through_key
from spica_core.db.models import Node, Stack, Transfer
from spica_core.liveness import LivenessRecorder
from spica_core.states import Action, Actor, StackState
from spica_core.transfer import copy_rows

T = TypeVar("T")

#: Rows of the common state, so that the rare one's index range looks like one row.
COMMON = 300


def _short_lock_wait(engine: Engine) -> Engine:
    """Lock waits of this engine's connections give up after 2 s (error 1205) instead of 50."""

    @event.listens_for(engine, "connect")
    def _set(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 2")

    return engine


@pytest.fixture
def engines(mysql_migrated_url: str, engine_factory) -> tuple[Engine, Engine]:
    """The first writer's engine and the second's (short lock waits)."""
    return engine_factory(mysql_migrated_url), _short_lock_wait(engine_factory(mysql_migrated_url))


def _stacks(engine: Engine, failed: list[str]) -> None:
    with Session(engine) as s, s.begin():
        for i in range(COMMON):
            stack_state.register(s, StackState.COMPLETED, name=f"C{i:04d}")
        stack_state.create_planned(s, name="P1")
        for name in failed:
            stack_state.register(s, StackState.FAILED, name=name)


def _requeue(session: Session, *names: str) -> list[stack_state.Moved]:
    moves = [stack_state.Transition(n, StackState.FAILED, StackState.PENDING) for n in names]
    return stack_state.move_many(session, moves, Actor.OPERATOR, Action.REQUEUE)


@pytest.mark.parametrize("grouped", [False, True], ids=["one stack", "a group"])
def test_a_requeue_does_not_wait_on_another_stacks_open_launch(
    engines: tuple[Engine, Engine], grouped: bool
) -> None:
    """One operator launches P1, the only planned stack (its transaction still open), while
    another requeues every failed stack."""
    first, second = engines
    failed = ["F2", "F3"] if grouped else ["F2"]
    _stacks(first, failed)
    with Session(first) as a, a.begin():
        launch = stack_state.move(a, "P1", "planned", "pending", Actor.OPERATOR, Action.LAUNCH)
        assert launch.applied
        with Session(second) as b, b.begin():
            moved = _requeue(b, *failed)
        assert [(m.stack, m.applied, m.had) for m in moved] == [(n, True, "failed") for n in failed]
    with Session(first) as s:
        rows = s.execute(select(Stack.name, Stack.state).where(Stack.state != "completed"))
        assert {name: state for name, state in rows} == dict.fromkeys(["P1", *failed], "pending")


@contextmanager
def _held_before_commit(engine: Engine, write: Callable[[], T]) -> Iterator[list[T]]:
    """``write`` run in a thread on ``engine`` and held just before its commit (its locks
    taken) while the body runs; its answer in the list afterwards."""
    written, release = threading.Event(), threading.Event()

    @event.listens_for(engine, "commit")
    def _hold(_connection) -> None:  # type: ignore[no-untyped-def]
        written.set()
        release.wait(30)

    answer: list[T] = []
    thread = threading.Thread(target=lambda: answer.append(write()))
    thread.start()
    try:
        assert written.wait(30), "the first writer never reached its commit"
        yield answer
    finally:
        release.set()
        thread.join(30)
        event.remove(engine, "commit", _hold)
    assert answer, "the first writer failed"


def test_a_liveness_transition_does_not_wait_on_another_nodes_open_one(
    engines: tuple[Engine, Engine],
) -> None:
    """Two monitors: one records n1, the only node never polled, up (held before its
    commit) while the other records n0, the only node down, back up."""
    first, second = engines
    status = {0: "down", 1: "unknown"}
    with Session(first) as s, s.begin():
        for i in range(COMMON):
            s.add(Node(name=f"n{i}", host="h", root="/data/spica", status=status.get(i, "up")))

    def up(name: str) -> ClusterSnapshot:
        node = NodeSnapshot(name=name, host="h", port=22, liveness=Liveness.UP)
        return ClusterSnapshot(taken_at=datetime.now(UTC), nodes=(node,))

    with _held_before_commit(first, lambda: LivenessRecorder(first).record(up("n1"))) as held:
        changes = LivenessRecorder(second).record(up("n0"))
    assert [(c.node, c.before, c.after) for c in changes] == [("n0", "down", "up")]
    assert [(c.node, c.before, c.after) for c in held[0]] == [("n1", "unknown", "up")]


def test_a_transfer_runners_writes_read_through_the_primary_key(
    engines: tuple[Engine, Engine],
) -> None:
    """A file claimed and beaten among many done (the only one running): every UPDATE the
    runner sends, explained with its parameters, reads the row through the primary key, not
    the ``state`` index that its statistics make look as selective."""
    engine, _ = engines
    with Session(engine) as s, s.begin():
        for i in range(COMMON):
            s.add(Transfer(filename=f"f{i:04d}", source="/r", destination_node="n", state="done"))
        row = Transfer(filename="a", source="/r", destination_node="n")
        s.add(row)
        s.flush()
        a = row.id
    sent: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("UPDATE"):
            sent.append((statement, parameters))

    since = datetime.now(UTC) - timedelta(hours=1)
    claimed = copy_rows.claim(engine, a, states=copy_rows.RUN_STATES, stale_before=since)
    assert claimed is not None
    kept, lost = copy_rows.touch(engine, [claimed])
    assert ([c.id for c in kept], lost) == ([a], [])
    event.remove(engine, "before_cursor_execute", _seen)
    assert len(sent) == 2, sent
    with engine.connect() as c:
        for statement, parameters in sent:
            plan = c.exec_driver_sql(f"EXPLAIN {statement}", parameters).mappings().one()
            assert plan["key"] == "PRIMARY", (statement, dict(plan))


def test_a_column_that_is_no_key_of_its_own_is_refused() -> None:
    assert "FORCE INDEX (uq_stack_name)" in str(
        through_key(update(Stack), "name").compile(dialect=mysql.dialect())
    )
    assert "FORCE INDEX (PRIMARY)" in str(
        through_key(update(Stack), "id").compile(dialect=mysql.dialect())
    )
    with pytest.raises(ValueError, match=r"stack\.state is not a key of its own"):
        through_key(update(Stack), "state")

"""dbspica's stack.state has one writer (spica_core.db.stack_state), on both engines."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import spica_core
from spica_core.db import stack_state
from spica_core.db.models import Stack
from spica_core.errors import StackStateError
from spica_core.states import Action, Actor, StackState

CORE = Path(spica_core.__file__).resolve().parent
STORE = CORE / "db" / "stack_state.py"


# --------------------------------------------------------------------------- the guard


def _is_stack(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "Stack") or (
        isinstance(node, ast.Attribute) and node.attr == "Stack"
    )


def _sets_state(values: ast.Call) -> bool:
    """Whether ``.values(...)`` may set ``state`` (a ``**mapping`` or a dict may)."""
    return any(k.arg in (None, "state") for k in values.keywords) or any(
        isinstance(a, ast.Dict | ast.Name | ast.Call) for a in values.args
    )


def state_writes(source: str) -> list[str]:
    """Every place in ``source`` that writes ``stack.state``, creates or deletes a row."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if _is_stack(func):
                found.append(f"{where}: Stack(...) creates a row")
            elif name in ("insert", "delete") and node.args and _is_stack(node.args[0]):
                found.append(f"{where}: {name}(Stack)")
            elif name == "values" and isinstance(func, ast.Attribute) and _sets_state(node):
                chain = func.value
                while isinstance(chain, ast.Call | ast.Attribute):
                    if isinstance(chain, ast.Call):
                        inner = chain.func
                        if getattr(inner, "id", getattr(inner, "attr", "")) == "update" and (
                            chain.args and _is_stack(chain.args[0])
                        ):
                            found.append(f"{where}: update(Stack).values(state=...)")
                            break
                        chain = chain.func
                    else:
                        chain = chain.value
            elif name == "setattr" and len(node.args) > 1:
                arg = node.args[1]
                if isinstance(arg, ast.Constant) and arg.value == "state":
                    found.append(f"{where}: setattr(..., 'state', ...)")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            while any(isinstance(t, ast.Tuple | ast.List) for t in targets):
                targets = [e for t in targets for e in getattr(t, "elts", [t])]
            for t in targets:
                if (
                    isinstance(t, ast.Attribute)
                    and t.attr == "state"
                    and not (isinstance(t.value, ast.Name) and t.value.id == "self")
                ):
                    found.append(f"{where}: .state = ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = " ".join(node.value.lower().split())
            if "update stack " in text or "insert into stack " in text:
                found.append(f"{where}: SQL text writing the stack table")
    return found


def test_only_the_store_writes_stack_state() -> None:
    offenders = {
        str(path.relative_to(CORE.parent)): hits
        for path in sorted(CORE.rglob("*.py"))
        if path != STORE and (hits := state_writes(path.read_text()))
    }
    assert offenders == {}, "stack.state is written outside spica_core/db/stack_state.py"
    assert state_writes(STORE.read_text())  # the guard sees the store's own writes


@pytest.mark.parametrize(
    "code",
    [
        "s.add(Stack(name='x', state='pending'))",
        "stack.state = 'running'",
        "row.state += 'x'",
        "a, stack.state = 1, 'failed'",
        "session.execute(update(Stack).where(Stack.id == 1).values(state='failed'))",
        "session.execute(update(Stack).where(x).values(**values))",
        "session.execute(update(models.Stack).values({'state': 'failed'}))",
        "session.execute(delete(Stack).where(Stack.id == 1))",
        "session.execute(insert(Stack).values(name='x'))",
        "setattr(stack, 'state', 'failed')",
        "conn.execute(text('UPDATE stack SET state = :s'))",
    ],
)
def test_the_guard_sees_each_way_of_writing(code: str) -> None:
    assert state_writes(code), code


def test_the_guard_lets_reads_and_other_columns_be() -> None:
    code = (
        "select(Stack.state).where(Stack.state == 'planned')\n"
        "update(Stack).where(Stack.id == 1).values(priority=3)\n"
        "self.state = state\n"
        "counts[entry.state.value] += 1\n"
        "stmt.where(Stack.state == query.state.value)\n"
    )
    assert state_writes(code) == []


# --------------------------------------------------------------------------- the store


def _add(engine, name: str, state: StackState = StackState.PLANNED) -> None:
    with Session(engine) as session, session.begin():
        if state is StackState.PLANNED:
            stack_state.create_planned(session, name=name)
        else:
            stack_state.register(session, state, name=name)


def _state(engine, name: str) -> str | None:
    with Session(engine) as session:
        return session.scalar(select(Stack.state).where(Stack.name == name))


def test_an_illegal_move_is_refused_naming_the_stack_and_the_allowed_moves(db_engine) -> None:
    _add(db_engine, "CFHTLS_W_u_1", StackState.COMPLETED)
    with Session(db_engine) as session, session.begin(), pytest.raises(StackStateError) as info:
        stack_state.move(
            session, "CFHTLS_W_u_1", "completed", "pending", Actor.OPERATOR, Action.REQUEUE
        )
    message = str(info.value)
    assert "stack CFHTLS_W_u_1 is completed" in message
    assert "allowed from completed: remove -> removed" in message
    assert _state(db_engine, "CFHTLS_W_u_1") == "completed"


def test_a_move_applies_only_from_the_state_seen(db_engine) -> None:
    _add(db_engine, "S1")
    with Session(db_engine) as session, session.begin():
        moved = stack_state.move(session, "S1", "planned", "pending", Actor.OPERATOR, Action.LAUNCH)
    assert (moved.applied, moved.had, moved.state) == (True, "planned", "pending")
    # A second writer that also saw it planned: refused, told what dbspica has.
    with Session(db_engine) as session, session.begin():
        moved = stack_state.move(session, "S1", "planned", "pending", Actor.OPERATOR, Action.LAUNCH)
    assert (moved.applied, moved.had) == (False, "pending")
    with Session(db_engine) as session, session.begin():
        moved = stack_state.move(session, "nope", "planned", "pending", "operator", "launch")
    assert (moved.applied, moved.had) == (False, None)


def test_following_the_node_never_removes_and_registers_in_its_state(db_engine) -> None:
    _add(db_engine, "S1", StackState.RUNNING)
    with Session(db_engine) as session, session.begin():
        with pytest.raises(StackStateError, match="stack S1 is running: cannot follow"):
            stack_state.follow(session, "S1", "running", "removed")
        with pytest.raises(StackStateError, match="stack S2 is absent from dbspica"):
            stack_state.register(session, "removed", name="S2")
        moved = stack_state.follow(session, "S1", "running", "planned", values={"error": "x"})
    assert moved.applied and _state(db_engine, "S1") == "planned"


def test_the_daemons_mirror_lands_whatever_dbspica_had(db_engine) -> None:
    """The node is the daemon's truth: its claim lands on a row an operator's launch has not
    reached yet (dbspica still planned), as a follow."""
    _add(db_engine, "S1")
    with Session(db_engine) as session, session.begin():
        moved = stack_state.mirror(
            session, "S1", "pending", "running", Actor.DAEMON, Action.CLAIM, values={"lines": 3}
        )
    assert (moved.applied, moved.had) == (True, "planned")
    with Session(db_engine) as session:
        row = session.scalars(select(Stack).where(Stack.name == "S1")).one()
        assert (row.state, row.lines) == ("running", 3)


def test_the_state_is_never_a_plain_column_of_the_store(db_engine) -> None:
    with Session(db_engine) as session, session.begin():
        with pytest.raises(TypeError):
            stack_state.create_planned(session, name="S1", state="running")
        with pytest.raises(TypeError):
            stack_state.follow(session, "S1", "planned", "pending", values={"state": "x"})


def test_move_many_answers_each_stack_as_move_alone_would(db_engine) -> None:
    """A bulk move groups the stacks that take the same values into one statement; each
    still answers on its own: applied, or what dbspica had (another state, no row), and a
    stack listed twice is moved by its first transition only."""
    for name in ("A1", "A2", "A3", "C", "E", "T"):
        _add(db_engine, name, StackState.FAILED)
    _add(db_engine, "B", StackState.PENDING)
    _add(db_engine, "R", StackState.RUNNING)
    cleared = {"error": None, "exit_code": None}
    moves = [
        stack_state.Transition(n, "failed", "pending", cleared)
        for n in ("A1", "B", "A2", "R", "NONE", "A3")
    ]
    moves += [
        stack_state.Transition("C", "failed", "pending", {**cleared, "priority": 5}),
        stack_state.Transition("E", "failed", "pending"),
    ]
    with Session(db_engine) as session, session.begin():
        moved = stack_state.move_many(session, moves, Actor.OPERATOR, Action.REQUEUE)
    assert [(m.stack, m.applied, m.had, m.state) for m in moved] == [
        ("A1", True, "failed", "pending"),
        ("B", False, "pending", "pending"),
        ("A2", True, "failed", "pending"),
        ("R", False, "running", "pending"),
        ("NONE", False, None, "pending"),
        ("A3", True, "failed", "pending"),
        ("C", True, "failed", "pending"),
        ("E", True, "failed", "pending"),
    ]
    with Session(db_engine) as session:
        rows = {r.name: r for r in session.scalars(select(Stack))}
        assert {n: r.state for n, r in rows.items()} == {
            **dict.fromkeys(["A1", "A2", "A3", "B", "C", "E"], "pending"),
            "R": "running",
            "T": "failed",
        }
        assert (rows["C"].priority, rows["A1"].priority) == (5, 0)
    twice = [stack_state.Transition("T", "failed", "pending", cleared)] * 2
    with Session(db_engine) as session, session.begin():
        moved = stack_state.move_many(session, twice, Actor.OPERATOR, Action.REQUEUE)
    assert [(m.applied, m.had) for m in moved] == [(True, "failed"), (False, "pending")]


_RACER = """
import json, sys
from sqlalchemy.orm import Session
from spica_core.config import DatabaseConfig
from spica_core.db import stack_state
from spica_core.db.engine import make_engine

url, many = sys.argv[1], sys.argv[2] == "many"
engine = make_engine(DatabaseConfig(url=url))
for line in sys.stdin:  # a round: the names to launch, all at once
    names, out = line.rstrip("\\n").split(","), {}
    if many:
        with Session(engine) as session, session.begin():
            moves = [stack_state.Transition(n, "planned", "pending") for n in names]
            for moved in stack_state.move_many(session, moves, "operator", "launch"):
                out[moved.stack] = [moved.applied, moved.had]
    for name in names if not many else ():
        with Session(engine) as session, session.begin():
            moved = stack_state.move(session, name, "planned", "pending", "operator", "launch")
        out[name] = [moved.applied, moved.had]
    print(json.dumps(out), flush=True)
"""


@pytest.mark.parametrize("many", [False, True], ids=["one by one", "move_many"])
def test_racing_writers_move_each_stack_once(db_engine, many: bool) -> None:
    """Four processes launch the same planned stacks in dbspica at once, round after round
    (each stack in a transaction, or all in one ``move_many``): each stack moves once,
    every other writer is told dbspica already has it pending. The four are started once
    and given each round's names together."""
    url = db_engine.url.render_as_string(hide_password=False)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, url, "many" if many else "one"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for round_ in range(5):
            names = [f"R{round_}_{i}" for i in range(10)]
            for name in names:
                _add(db_engine, name)
            for p in racers:
                assert p.stdin is not None
                p.stdin.write(",".join(names) + "\n")
                p.stdin.flush()
            results = []
            for p in racers:
                assert p.stdout is not None
                results.append(json.loads(p.stdout.readline()))
            for name in names:
                outcomes = sorted(tuple(r[name]) for r in results)
                assert outcomes == [(False, "pending")] * 3 + [(True, "planned")], name
                assert _state(db_engine, name) == "pending"
        for p in racers:
            assert p.stdin is not None
            p.stdin.close()
            assert p.wait(timeout=60) == 0
    finally:
        for p in racers:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_later_change_lands_after_a_move_over_a_copy_read_earlier(
    mysql_url: str, engine_factory
) -> None:
    """MariaDB: the daemon's session read the row before an operator's commit; the mirror's
    move lands on the row as it is now, and a column set afterwards through the session's
    copy is still written (the copy is reloaded, not trusted)."""
    from spica_core.db.schema import upgrade

    engine = engine_factory(mysql_url)
    upgrade(engine)
    _add(engine, "S1")
    with Session(engine) as daemon, daemon.begin():
        row = daemon.scalars(select(Stack).where(Stack.name == "S1")).one()  # its snapshot
        assert (row.state, row.progress) == ("planned", 0)
        with Session(engine) as operator, operator.begin():
            stack_state.move(operator, "S1", "planned", "pending", "operator", "launch")
        moved = stack_state.mirror(
            daemon, "S1", "pending", "running", "daemon", "claim", values={"progress": 7}
        )
        assert (moved.applied, moved.had) == (True, "pending")
        row.progress = 0  # what the stale copy held: must still be written
    with Session(engine) as session:
        row = session.scalars(select(Stack).where(Stack.name == "S1")).one()
        assert (row.state, row.progress) == ("running", 0)

"""Every dbspica model round-trips, value for value, on SQLite and on MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import BigInteger, Boolean, Float, Integer, String, Text, select
from sqlalchemy.orm import Session
from sqlalchemy.types import JSON

from spica_core.db.models import ALL_MODELS, Base, Node, Stack, StackRun
from spica_core.db.types import UtcDateTime

T0 = datetime(2005, 9, 9, 3, 14, 15, 926535, tzinfo=UTC)


def sample(column: Any, i: int) -> Any:
    """A value that exercises the column's type (big ints, microseconds, unicode, JSON)."""
    t = column.type
    if isinstance(t, UtcDateTime):
        return T0 + timedelta(days=i, microseconds=i)
    if isinstance(t, Boolean):
        return i % 2 == 1
    if isinstance(t, BigInteger):
        return 652_036_000_000 + i  # the seed's 652 GB disks overflow 32 bits
    if isinstance(t, Integer):
        return 7 + i
    if isinstance(t, Float):
        return 0.91 + i
    if isinstance(t, JSON):
        return ["03AL01", {"seeing": 0.88, "node": "mix4"}, i]
    if isinstance(t, Text):
        return f"Failed on /usr/local/spica/spica_copy.pl -m mix4 - Code 2 - Line {i} é★"
    if isinstance(t, String):
        return f"v{i}-{column.name}"[: t.length]
    raise AssertionError(f"no sample for {column.table.name}.{column.name}: {t!r}")


def build_all(session: Session) -> dict[type[Base], Base]:
    """One fully populated row per model; foreign keys point at rows made before."""
    made: dict[str, Base] = {}
    order = {t.name: i for i, t in enumerate(Base.metadata.sorted_tables)}
    for n, model in enumerate(sorted(ALL_MODELS, key=lambda m: order[m.__tablename__])):
        values = {}
        for column in model.__table__.columns:
            if column.primary_key:
                continue
            if column.foreign_keys:
                (fk,) = column.foreign_keys
                values[column.key] = made[fk.column.table.name].id
            else:
                values[column.key] = sample(column, n)
        obj = model(**values)
        session.add(obj)
        session.flush()
        made[model.__tablename__] = obj
    return {type(o): o for o in made.values()}


def row_values(obj: Base) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


def test_every_model_round_trips(db_engine) -> None:
    with Session(db_engine) as session, session.begin():
        written = {m: row_values(o) for m, o in build_all(session).items()}
    assert set(written) == set(ALL_MODELS)
    with Session(db_engine) as session:
        for model, expected in written.items():
            obj = session.get(model, expected["id"])
            assert obj is not None, model.__tablename__
            got = row_values(obj)
            for key, value in expected.items():
                if isinstance(value, float):
                    assert got[key] == pytest.approx(value, rel=1e-6), (model.__tablename__, key)
                else:
                    assert got[key] == value, (model.__tablename__, key)
            for key, value in got.items():
                if isinstance(value, datetime):
                    assert value.tzinfo is UTC, (model.__tablename__, key)


def test_defaults_and_relationships(db_engine) -> None:
    with Session(db_engine) as session, session.begin():
        node = Node(name="mix4", host="mix4.example.org", root="/data/mix4/spica")
        stack = Stack(name="CFHTLS_Pre-W_r_021800-085200_T0003", node=node, runid="05BL02")
        stack.runs.append(StackRun(line=1, command="echo ok", started_at=T0))
        session.add(stack)
    with Session(db_engine) as session:
        stack = session.scalars(select(Stack)).one()
        assert (stack.state, stack.priority, stack.step) == ("planned", 0, "stack")
        assert stack.node.name == "mix4"
        assert stack.node.status == "unknown"
        assert stack.runs[0].attempt == 1
        assert stack.created_at.tzinfo is UTC


def test_stack_run_attempt_is_unique(db_engine) -> None:
    """A replayed journal entry can never insert the same run twice."""
    from sqlalchemy.exc import IntegrityError

    with Session(db_engine) as session, session.begin():
        stack = Stack(name="s1")
        session.add(stack)
        session.flush()
        session.add(StackRun(stack_id=stack.id, line=1, attempt=1, command="x", started_at=T0))
    with pytest.raises(IntegrityError), Session(db_engine) as session, session.begin():
        stack = session.scalars(select(Stack)).one()
        session.add(StackRun(stack_id=stack.id, line=1, attempt=1, command="x", started_at=T0))


def test_naive_datetimes_are_refused(db_engine) -> None:
    from sqlalchemy.exc import StatementError

    with pytest.raises(StatementError, match="naive datetime"), Session(db_engine) as session:
        session.add(Stack(name="s2", launched_at=datetime(2024, 1, 1)))
        session.flush()

"""dbspica's ``stack.state``: the one module that writes it (DESIGN §3).

The node's queue file is the execution truth and dbspica mirrors it. Every change of a
stack row's state — the operations' dbspica half, reconcile, ``stack add``, the demo seed,
the daemon's mirror — comes here: the move is first asked of :mod:`spica_core.states`, then
applied as ``UPDATE stack … WHERE name = … AND state = <seen>``, so a writer that read a
state another one has changed since never overwrites it. The answer says whether it applied
and what dbspica had. Rows are created here too: new work is ``planned``; a stack only its
node knows is registered in the node's state (a *follow* from no row).

A test (``tests/test_stack_state_store.py``) fails if any other module of ``spica_core``
writes the column, creates a row or deletes one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from spica_core.db.keyed import through_key
from spica_core.db.models import Image, Stack, StackFile
from spica_core.db.types import affected_rows, utcnow
from spica_core.node.layout import QFIN_STEP
from spica_core.states import (
    Action,
    Actor,
    StackState,
    check_follow,
    check_transition,
)


@dataclass(frozen=True)
class Moved:
    """The outcome of one state write."""

    stack: str
    #: Whether dbspica now holds ``state`` by this write.
    applied: bool
    #: dbspica's state before the write (None: it has no row of the stack).
    had: str | None
    state: str


def move(
    session: Session,
    stack: str,
    seen: StackState | str,
    target: StackState | str,
    actor: Actor | str,
    action: Action | str,
    *,
    stale: bool = False,
    values: Mapping[str, Any] | None = None,
) -> Moved:
    """dbspica's half of a node transition ``seen -> target`` (checked with
    :func:`~spica_core.states.check_transition`, ``StackStateError`` when illegal), applied
    only if dbspica still says ``seen``; ``values`` are the other columns set with it."""
    check_transition(stack, seen, target, actor, action, stale=stale)
    return _write(session, stack, StackState(seen), StackState(target), values)


@dataclass(frozen=True)
class Transition:
    """One stack's ``seen -> target`` in :func:`move_many`, with the other columns set."""

    stack: str
    seen: StackState | str
    target: StackState | str
    values: Mapping[str, Any] | None = None


def move_many(
    session: Session,
    transitions: Sequence[Transition],
    actor: Actor | str,
    action: Action | str,
    *,
    stale: bool = False,
) -> list[Moved]:
    """:func:`move` of each transition, in order, each checked and applied (or not) on its
    own — the same answers — with one prepared statement per set of columns: a bulk
    operation's thousand rows cost a thousand executions, not a thousand compilations."""
    checked: set[tuple[str, str]] = set()
    for t in transitions:
        pair = (str(t.seen), str(t.target))
        if pair not in checked:  # the answer depends on the states alone, not the stack
            check_transition(t.stack, t.seen, t.target, actor, action, stale=stale)
            checked.add(pair)
    if len({t.stack for t in transitions}) < len(transitions):
        return _write_many(session, transitions)  # a stack twice: each write sees the last
    return _write_groups(session, transitions)


def follow(
    session: Session,
    stack: str,
    seen: StackState | str,
    target: StackState | str,
    *,
    values: Mapping[str, Any] | None = None,
) -> Moved:
    """dbspica takes the node's state ``target`` (:func:`~spica_core.states.check_follow`),
    only if it still says ``seen``: reconcile's fix of a drift."""
    check_follow(stack, seen, target)
    return _write(session, stack, StackState(seen), StackState(target), values)


def mirror(
    session: Session,
    stack: str,
    source: StackState | str,
    target: StackState | str,
    actor: Actor | str,
    action: Action | str,
    *,
    stale: bool = False,
    values: Mapping[str, Any] | None = None,
    seen: StackState | str | None = None,
) -> Moved:
    """Mirror a node transition ``source -> target`` that already happened on the node.

    dbspica's state is ``seen``, or read under a row lock when not given (the daemon: the
    node is its truth, so its write must land). When it is ``source`` this is the
    transition itself; otherwise dbspica had drifted and follows the node to ``target``.
    """
    if seen is None:
        seen = _locked_state(session, stack)
        if seen is None:
            return Moved(stack, False, None, str(StackState(target)))
    if StackState(seen) == StackState(source):
        return move(session, stack, seen, target, actor, action, stale=stale, values=values)
    return follow(session, stack, seen, target, values=values)


def create_planned(session: Session, **columns: Any) -> Stack:
    """A new stack row for generated work: ``planned``, no queue file on a node yet."""
    return _add(session, StackState.PLANNED, columns)


def register(session: Session, state: StackState | str, **columns: Any) -> Stack:
    """A row for a stack only its node knows (queued by hand, or lost by a restored dbspica),
    in the node's ``state``: dbspica follows the node from no row."""
    check_follow(str(columns.get("name")), None, state)
    return _add(session, StackState(state), columns)


def remove(session: Session, stack: str, seen: StackState | str) -> bool:
    """Delete the row of a stack its node has removed (the operator's ``remove``, from the
    ``seen`` state the plan checked); whether there was a row. The node's removal is the
    commit point: the row goes whatever dbspica says now."""
    check_transition(stack, seen, StackState.REMOVED, Actor.OPERATOR, Action.REMOVE)
    # A QFin unit removed before it recorded anything: its image is new again (planned
    # afresh by ``spica qfin``); measured or failed images keep what QFin found.
    qfin_images = (
        select(StackFile.image_id)
        .join(Stack, Stack.id == StackFile.stack_id)
        .where(Stack.name == stack, Stack.step == QFIN_STEP, StackFile.role == QFIN_STEP)
    )
    session.execute(
        update(Image)
        .where(Image.id.in_(qfin_images), Image.qf_status == "planned")
        .values(qf_status="new")
        .execution_options(synchronize_session=False)
    )
    done = affected_rows(session.execute(delete(Stack).where(Stack.name == stack)))
    return bool(done)


def _add(session: Session, state: StackState, columns: dict[str, Any]) -> Stack:
    if "state" in columns:
        raise TypeError("the state of a new stack row is the store's argument, not a column")
    row = Stack(state=state.value, **columns)
    session.add(row)
    return row


def _locked_state(session: Session, stack: str) -> str | None:
    """dbspica's state of ``stack`` now, the row locked until the transaction ends
    (MariaDB; SQLite's writer already holds the database)."""
    return session.scalar(select(Stack.state).where(Stack.name == stack).with_for_update())


def _write(
    session: Session,
    stack: str,
    seen: StackState,
    target: StackState,
    values: Mapping[str, Any] | None,
) -> Moved:
    return _write_many(session, [Transition(stack, seen, target, values)])[0]


#: Stacks per statement of a grouped write: within every backend's parameter limit.
_GROUP_ROWS = 500


def _write_groups(session: Session, transitions: Sequence[Transition]) -> list[Moved]:
    """:func:`_write_many` of distinct stacks, with a statement per group of transitions
    that set the same columns to the same values (a bulk requeue is one group): the rows
    are read under a row lock, then those still in ``seen`` are updated in one
    ``UPDATE … WHERE name IN (…) AND state = <seen>``; round trips per chunk, not per row."""
    groups: dict[tuple[str, str, tuple[tuple[str, Any], ...]], list[int]] = {}
    single: list[int] = []
    for i, t in enumerate(transitions):
        values = dict(t.values or {})
        if "state" in values:
            raise TypeError("the state is the store's argument, not one of the other values")
        values.pop("updated_at", None)
        try:
            key = (
                StackState(t.seen).value,
                StackState(t.target).value,
                tuple(sorted(values.items())),
            )
            hash(key)
        except TypeError:  # a value that is not hashable (JSON): written on its own
            single.append(i)
            continue
        groups.setdefault(key, []).append(i)
    for key, members in list(groups.items()):
        if len(members) == 1:  # a statement of its own costs less than a group's two
            single += groups.pop(key)
    if groups and not single:
        # The first write is a row's UPDATE, as in _write_many: on SQLite it takes the
        # write lock (waiting its turn) before the groups' reads, which a writer committing
        # in between would otherwise make fail.
        single.append(next(iter(groups.values())).pop(0))
    single.sort()
    out: list[Moved | None] = [None] * len(transitions)
    if single:
        for i, moved in zip(
            single, _write_many(session, [transitions[i] for i in single]), strict=True
        ):
            out[i] = moved
    session.flush()
    connection = session.connection()
    table = cast(Table, Stack.__table__)
    now = utcnow()
    for (seen, target, columns), members in groups.items():
        for start in range(0, len(members), _GROUP_ROWS):
            chunk = members[start : start + _GROUP_ROWS]
            names = [transitions[i].stack for i in chunk]
            had = dict(
                connection.execute(
                    select(table.c.name, table.c.state)
                    .where(table.c.name.in_(names))
                    .with_for_update()
                ).all()
            )
            ready = [n for n in names if had.get(n) == seen]
            if ready:
                done = affected_rows(
                    connection.execute(
                        through_key(update(table), "name")
                        .where(table.c.name.in_(ready), table.c.state == seen)
                        .values(state=target, updated_at=now, **dict(columns))
                    )
                )
                if done != len(ready):  # changed between the locking read and the write
                    had = dict(
                        connection.execute(
                            select(table.c.name, table.c.state).where(table.c.name.in_(names))
                        ).all()
                    )
                    ready = [n for n in ready if had.get(n) == target]
            applied = set(ready)
            for i, name in zip(chunk, names, strict=True):
                out[i] = (
                    Moved(name, True, seen, target)
                    if name in applied
                    else Moved(name, False, had.get(name), target)
                )
    answers = [m for m in out if m is not None]
    _expire(session, {m.stack for m in answers if m.applied})
    return answers


def _write_many(session: Session, transitions: Sequence[Transition]) -> list[Moved]:
    """``UPDATE stack … WHERE name = … AND state = <seen>`` of each transition; what it did.
    One statement per set of columns, prepared once and executed per row."""
    session.flush()  # the session's own pending changes land first, not after these writes
    connection = session.connection()
    table = cast(Table, Stack.__table__)
    now = utcnow()
    statements: dict[tuple[str, ...], Any] = {}
    out: list[Moved] = []
    for t in transitions:
        columns = dict(t.values or {})
        if "state" in columns:
            raise TypeError("the state is the store's argument, not one of the other values")
        columns.pop("updated_at", None)  # always the time of this write
        keys = tuple(sorted(columns))
        stmt = statements.get(keys)
        if stmt is None:
            stmt = statements[keys] = (
                through_key(update(table), "name")
                .where(table.c.name == bindparam("_name"), table.c.state == bindparam("_seen"))
                .values(
                    state=bindparam("_target"),
                    updated_at=bindparam("_now"),
                    **{k: bindparam(f"_v_{k}") for k in keys},
                )
            )
        seen, target = StackState(t.seen).value, StackState(t.target).value
        params = {"_name": t.stack, "_seen": seen, "_target": target, "_now": now}
        params.update({f"_v_{k}": v for k, v in columns.items()})
        if affected_rows(connection.execute(stmt, params)):
            out.append(Moved(t.stack, True, seen, target))
        else:
            # A locking read: under MariaDB's repeatable read a plain one would answer from
            # the transaction's snapshot, older than the write that made this one miss.
            out.append(Moved(t.stack, False, _locked_state(session, t.stack), target))
    _expire(session, {m.stack for m in out if m.applied})
    return out


def _expire(session: Session, moved: set[str]) -> None:
    """The session's copies of the rows are reloaded at their next use: they may have been
    read before another writer's commit (MariaDB's snapshot), and the ORM must not skip a
    later change because it equals what a stale copy held."""
    for row in list(session.identity_map.values()):
        if isinstance(row, Stack) and row.name in moved:
            session.expire(row)

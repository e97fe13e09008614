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

from spica_core.db.models import Stack
from spica_core.db.types import affected_rows, utcnow
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
    for t in transitions:
        check_transition(t.stack, t.seen, t.target, actor, action, stale=stale)
    return _write_many(session, transitions)


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
                update(table)
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
    # The session's copies of the rows are reloaded at their next use: they may have been
    # read before another writer's commit (MariaDB's snapshot), and the ORM must not skip a
    # later change because it equals what a stale copy held.
    moved = {m.stack for m in out if m.applied}
    for row in list(session.identity_map.values()):
        if isinstance(row, Stack) and row.name in moved:
            session.expire(row)
    return out

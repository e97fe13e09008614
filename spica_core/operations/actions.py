"""Launch, requeue, unlock and remove in three phases: select, plan, apply.

*select* reads dbspica; *plan* asks the executor for each stack's dry run, so the plan says
exactly which files are renamed or deleted; *apply* works stack by stack:

1. an ``operator_action`` row with result ``pending`` (the intent; nothing changed yet);
2. the executor's apply on the node — the rename there is the commit point;
3. dbspica follows, with an optimistic check on the state, and the intent becomes
   ``applied`` in the same transaction.

An apply interrupted between 2 and 3 leaves a ``pending`` intent that ``spica reconcile``
finishes (or rolls back) from what the node shows. One stack's failure never stops the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from spica_core.config import SpicaConfig
from spica_core.db import stack_state
from spica_core.db.engine import db_unavailable, describe_db_error
from spica_core.db.models import Image, OperatorAction, Stack, StackFile
from spica_core.db.runs import end_dead_runs, wire_time
from spica_core.db.types import utcnow
from spica_core.errors import NodeAnswerLost, NodeUnreachable, StackStateError
from spica_core.executor import (
    Change,
    ErrorCode,
    Executor,
    Launch,
    ProtocolError,
    Remove,
    Requeue,
    StackChange,
    Unlock,
)
from spica_core.names import validate_name
from spica_core.operations.model import (
    ItemResult,
    OpAction,
    OperationRequest,
    Outcome,
    Plan,
    PlanItem,
)
from spica_core.read_model import iter_stacks
from spica_core.reports import iso
from spica_core.states import Actor, StackState, check_transition

#: Test hook: the apply phase exits the process right after this point (a real crash).
FAULT_ENV = "SPICA_FAULT_POINT"


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os._exit(70)


@dataclass(frozen=True)
class Target:
    """A selected stack as dbspica holds it."""

    id: int
    name: str
    node: str | None
    state: str
    priority: int
    purge: tuple[str, ...]


def select_targets(engine: Engine, request: OperationRequest, config: SpicaConfig) -> list[Target]:
    """The stacks a request names or filters; unknown names are kept (refused at planning)."""
    with Session(engine) as session:
        rows: list[Stack] = []
        names = request.selection.names
        flt = request.selection.filter
        for name in names:
            validate_name(name, "stack")
        if flt is not None:
            if names:  # names and a filter: the named stacks the filter keeps
                named = frozenset(names)
                flt = flt.with_names(named if flt.names is None else flt.names & named)
            rows = list(iter_stacks(session, flt))
        elif names:
            rows = list(
                session.scalars(
                    select(Stack).where(Stack.name.in_(names)).options(selectinload(Stack.node))
                )
            )
        purge: dict[int, tuple[str, ...]] = {}
        if request.action is OpAction.REMOVE and request.purge_inputs and rows:
            purge = _purgeable_inputs(session, [r.id for r in rows], config)
        found = {
            r.name: Target(
                r.id,
                r.name,
                r.node.name if r.node else None,
                r.state,
                r.priority,
                purge.get(r.id, ()),
            )
            for r in rows
        }
    ordered = [found[n] for n in request.selection.names if n in found]
    ordered += [t for n, t in found.items() if n not in request.selection.names]
    missing = [
        Target(-1, n, None, "unknown", 0, ()) for n in request.selection.names if n not in found
    ]
    return ordered + missing


def _purgeable_inputs(
    session: Session, stack_ids: list[int], config: SpicaConfig
) -> dict[int, tuple[str, ...]]:
    """Input files a ``--purge-inputs`` may delete: never raw exposures, only files under the
    stack's node root, as paths relative to it."""
    roots = {n.name: n.root.rstrip("/") + "/" for n in config.nodes}
    out: dict[int, list[str]] = {}
    rows = session.execute(
        select(StackFile.stack_id, Image.path, Stack.node_id)
        .join(Image, StackFile.image_id == Image.id)
        .join(Stack, StackFile.stack_id == Stack.id)
        .where(StackFile.stack_id.in_(stack_ids), Image.raw.is_(False), Image.path.isnot(None))
    ).all()
    node_names = {
        s.id: s.node.name if s.node else None
        for s in session.scalars(
            select(Stack).where(Stack.id.in_(stack_ids)).options(selectinload(Stack.node))
        )
    }
    for stack_id, path, _node_id in rows:
        root = roots.get(node_names.get(stack_id) or "")
        if root and path is not None and path.startswith(root):
            out.setdefault(stack_id, []).append(path[len(root) :])
    return {k: tuple(sorted(set(v))) for k, v in out.items()}


def _change(
    request: OperationRequest,
    node: str,
    stack: str,
    priority: int,
    purge: tuple[str, ...],
    stack_id: int | None = None,
) -> Change:
    """The executor's change for one stack of ``request``."""
    by = request.user
    match request.action:
        case OpAction.LAUNCH:
            return Launch(node, stack, by, priority=priority)
        case OpAction.REQUEUE:
            return Requeue(node, stack, by, priority=priority, from_start=request.from_start)
        case OpAction.UNLOCK:
            if request.requeue:
                return Unlock(node, stack, by, to="pending", priority=priority)
            return Unlock(node, stack, by, to="failed", priority=priority)
    # Who removes it, and which dbspica stack: a second remover is told "removed by".
    return Remove(node, stack, by, purge=purge, stack_id=stack_id)


def _target_change(request: OperationRequest, target: Target) -> Change:
    assert target.node is not None
    stack_id = target.id if target.id >= 0 else None
    return _change(request, target.node, target.name, target.priority, target.purge, stack_id)


def _db_change(request: OperationRequest, target: Target) -> str:
    if request.action is OpAction.REMOVE:
        return f"delete stack {target.name} and its files/runs rows"
    return f"stack.state {target.state} -> {request.target_state}"


async def plan(
    request: OperationRequest, engine: Engine, executor: Executor, config: SpicaConfig
) -> Plan:
    """What ``request`` would do, stack by stack; nothing changes anywhere."""
    targets = select_targets(engine, request, config)
    items = [await _plan_one(request, t, executor, engine) for t in targets]
    return Plan(request, tuple(items))


async def _plan_one(
    request: OperationRequest, target: Target, executor: Executor, engine: Engine
) -> PlanItem:
    base: dict[str, Any] = {
        "stack": target.name,
        "node": target.node,
        "state": target.state,
        "target": request.target_state,
        "priority": target.priority,
        "purge": target.purge,
        "stack_id": target.id if target.id >= 0 else None,
    }
    if target.id < 0:
        return PlanItem(
            **base,
            refused=f"no stack named {target.name} in dbspica{_removed(engine, target.name)}",
        )
    try:
        check_transition(
            target.name,
            target.state,
            request.target_state,
            Actor.OPERATOR,
            request.action.value,
            stale=True,
        )
    except StackStateError as exc:
        if target.state != request.target_state or target.node is None:
            return PlanItem(**base, refused=str(exc))
        # Already where this action leads: let the node say who moved it and when.
        return PlanItem(**base, refused=await _node_refusal(request, target, executor, str(exc)))
    if target.node is None:
        return PlanItem(**base, refused=f"stack {target.name} has no node in dbspica")
    try:
        change = await executor.plan(_target_change(request, target))
    except ProtocolError as exc:
        return PlanItem(**base, refused=f"node {target.node}: {exc.message}")
    except NodeUnreachable as exc:
        return PlanItem(**base, refused=str(exc), unreachable=True)
    except Exception as exc:  # AgentMissing, config errors: refuse this stack only
        return PlanItem(**base, refused=f"node {target.node}: {exc}", unreachable=True)
    node_state = change.from_
    if node_state and node_state != target.state:
        return PlanItem(
            **base,
            refused=f"drift: dbspica says {target.state}, node {target.node} says {node_state} "
            "(run spica reconcile)",
        )
    return PlanItem(**base, node_change=change, db_change=_db_change(request, target))


def _removed(engine: Engine, stack: str) -> str:
    """' (removed by USER at TIME)' from the audit when a remove of ``stack`` was applied."""
    with Session(engine) as session:
        rows = session.scalars(
            select(OperatorAction)
            .where(OperatorAction.action == OpAction.REMOVE.value)
            .where(OperatorAction.result == Outcome.APPLIED.value)
            .where(OperatorAction.plan.contains(stack, autoescape=True))
            .order_by(OperatorAction.id.desc())
            .limit(50)
        )
        row = next((r for r in rows if r.targets == [stack]), None)
    return f" (removed by {row.user} at {iso(row.created_at)})" if row else ""


async def _node_refusal(
    request: OperationRequest, target: Target, executor: Executor, fallback: str
) -> str:
    assert target.node is not None
    try:
        await executor.plan(_target_change(request, target))
    except ProtocolError as exc:
        return f"node {target.node}: {exc.message}"
    except Exception:
        return fallback
    return fallback


# --------------------------------------------------------------------------------- apply


def _intent(engine: Engine, request: OperationRequest, item: PlanItem) -> int:
    with Session(engine) as session, session.begin():
        row = OperatorAction(
            user=request.user,
            action=request.action.value,
            targets=[item.stack],
            dry_run=False,
            plan=item.describe(),
            result="pending",
            detail={
                "node": item.node,
                "from": item.state,
                "to": item.target,
                "from_start": request.from_start,
                # The node's claim counter as the plan saw it: a higher one later proves the
                # stack was claimed since, i.e. this action reached the node (reconcile).
                "attempt": item.node_change.attempt if item.node_change else None,
            },
        )
        session.add(row)
        session.flush()
        return row.id


def finish_in_db(
    engine: Engine,
    action_id: int | None,
    item: PlanItem,
    action: OpAction,
    message: str,
    *,
    outcome: str = "applied",
) -> str:
    """The dbspica half of an applied stack, optimistic on the state; returns a note."""
    note = ""
    with Session(engine) as session, session.begin():
        stack = session.scalars(select(Stack).where(Stack.name == item.stack)).one_or_none()
        if stack is None:
            note = "; the stack's row was already gone"
        elif action is OpAction.REMOVE:
            stack_state.remove(session, stack.name, item.state)
        else:
            values: dict[str, Any] = {}
            if action is OpAction.LAUNCH:
                values["launched_at"] = utcnow()
            if item.target == StackState.PENDING:
                values.update(error=None, exit_code=None)
                if item.node_change and item.node_change.from_start:
                    values["progress"] = 0
            if action is OpAction.UNLOCK and item.target == StackState.FAILED:
                values["error"] = message
            if action is OpAction.UNLOCK:
                _end_run(session, stack.id, item.node_change)
            moved = stack_state.move(
                session,
                stack.name,
                item.state,
                item.target,
                Actor.OPERATOR,
                action.value,
                stale=True,  # the node decided that (an unlock of a live claim is refused)
                values=values,
            )
            if not moved.applied and moved.had != item.target:
                note = f"; dbspica had {moved.had}, left as is (run spica reconcile)"
        if action_id is not None:
            session.execute(
                update(OperatorAction)
                .where(OperatorAction.id == action_id)
                .values(result=outcome, detail=_merge_detail(session, action_id, message + note))
            )
    return note


def _end_run(session: Session, stack_id: int, change: StackChange | None) -> None:
    """Close the ``stack_run`` row an unlock ended on the node (its line was killed, or its
    daemon was dead): the node's ``ended_run`` answer."""
    ended = change.ended_run if change else None
    if ended:
        end_dead_runs(
            session, stack_id, ended.attempt, ended.line, ended.exit_code, wire_time(ended.ended_at)
        )


def end_unlocked_run(engine: Engine, stack: str, change: StackChange) -> None:
    """:func:`_end_run` in a transaction of its own, for an unlock made outside ``apply``
    (reconcile's fix of a stale claim)."""
    with Session(engine) as session, session.begin():
        stack_id = session.scalar(select(Stack.id).where(Stack.name == stack))
        if stack_id is not None:
            _end_run(session, stack_id, change)


def _merge_detail(session: Session, action_id: int, message: str) -> dict[str, Any]:
    row = session.get(OperatorAction, action_id)
    return {**(row.detail if row else {}), "message": message}


def _close_intent(engine: Engine, action_id: int, outcome: Outcome, message: str) -> None:
    try:
        with Session(engine) as session, session.begin():
            session.execute(
                update(OperatorAction)
                .where(OperatorAction.id == action_id)
                .values(result=outcome.value, detail=_merge_detail(session, action_id, message))
            )
    except SQLAlchemyError:
        pass  # the intent stays pending: reconcile sees the node unchanged and rolls it back


def _note_intent(engine: Engine, action_id: int, message: str) -> None:
    """Say why an intent stays pending (best effort: it is pending either way)."""
    try:
        with Session(engine) as session, session.begin():
            session.execute(
                update(OperatorAction)
                .where(OperatorAction.id == action_id, OperatorAction.result == "pending")
                .values(detail=_merge_detail(session, action_id, message))
            )
    except SQLAlchemyError:
        pass


async def apply(
    plan_: Plan,
    engine: Engine,
    executor: Executor,
    on_result: Callable[[ItemResult], None] | None = None,
) -> list[ItemResult]:
    """Carry out every doable item of ``plan_``; refused items are reported as refused."""
    request = plan_.request
    results: list[ItemResult] = []
    for item in plan_.items:
        if item.refused:
            result = ItemResult(
                item.stack, item.node, Outcome.REFUSED, item.refused, item.unreachable
            )
        else:
            result = await _apply_one(request, item, engine, executor)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


async def _apply_one(
    request: OperationRequest, item: PlanItem, engine: Engine, executor: Executor
) -> ItemResult:
    assert item.node is not None
    try:
        action_id = _intent(engine, request, item)
    except SQLAlchemyError as exc:
        return ItemResult(
            item.stack, item.node, Outcome.FAILED, str(db_unavailable(engine, exc)), True
        )
    _fault("after-intent")
    move = _change(request, item.node, item.stack, item.priority, item.purge, item.stack_id)
    try:
        change = await executor.apply(move)
    except ProtocolError as exc:
        outcome = Outcome.REFUSED if exc.code == ErrorCode.WRONG_STATE else Outcome.FAILED
        message = f"node {item.node}: {exc.message}"
        _close_intent(engine, action_id, outcome, message)
        return ItemResult(item.stack, item.node, outcome, message)
    except NodeAnswerLost as exc:
        # The request went out: the node may have renamed. The intent stays pending, for
        # reconcile to decide from what the node shows.
        message = f"outcome unknown: {exc}; run spica reconcile"
        _note_intent(engine, action_id, message)
        return ItemResult(item.stack, item.node, Outcome.UNKNOWN, message, True)
    except NodeUnreachable as exc:
        _close_intent(engine, action_id, Outcome.FAILED, str(exc))
        return ItemResult(item.stack, item.node, Outcome.FAILED, str(exc), True)
    _fault("after-node-commit")
    message = f"{item.state} -> {item.target} on {item.node}"
    if change.resume_line:
        message += f", resumes at line {change.resume_line}"
    done = replace(item, node_change=change)
    try:
        note = finish_in_db(
            engine, action_id, done, request.action, f"{request.action.value} by {request.user}"
        )
    except SQLAlchemyError as exc:
        return ItemResult(
            item.stack,
            item.node,
            Outcome.PARTIAL,
            f"{message}; dbspica not updated ({describe_db_error(exc)}): "
            "spica reconcile --fix finishes it",
            True,
        )
    return ItemResult(item.stack, item.node, Outcome.APPLIED, message + note)

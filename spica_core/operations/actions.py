"""Launch, requeue, unlock and remove in three phases: select, plan, apply.

*select* reads dbspica; *plan* asks the executor for each stack's dry run, so the plan says
exactly which files are renamed or deleted; *apply* works in chunks of stacks, each stack
answered on its own:

1. an ``operator_action`` row per stack with result ``pending`` (the intent; nothing changed
   yet);
2. the executor's apply on the nodes — every node at once, in batches; the rename on the
   node is each stack's commit point;
3. dbspica follows, with an optimistic check on each state, and each intent becomes
   ``applied`` (or refused, failed) in the same transaction.

An apply interrupted between 2 and 3 leaves ``pending`` intents that ``spica reconcile``
finishes (or rolls back) from what the nodes show. One stack's failure never stops the rest.
dbspica is read and written on a worker thread, never on the loop that carries the SSH
traffic: a lock wait there stalls no poll and no keepalive. The writes of a chunk share one
transaction; if it fails, each stack is written in its own, so every outcome is exact.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from spica_core.config import SpicaConfig
from spica_core.db import stack_state
from spica_core.db.engine import db_unavailable, describe_db_error
from spica_core.db.models import Image, Node, OperatorAction, Stack, StackFile
from spica_core.db.runs import end_dead_runs, wire_time
from spica_core.db.types import utcnow
from spica_core.errors import NodeAnswerLost, NodeUnreachable, StackStateError
from spica_core.executor import (
    Answer,
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
from spica_core.operations import audit
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


#: Stacks applied together: their intents are written, their nodes asked and their rows
#: moved as one chunk (results are reported chunk by chunk).
APPLY_CHUNK = 1000

T = TypeVar("T")
X = TypeVar("X")


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
        names = request.selection.names
        flt = request.selection.filter
        for name in names:
            validate_name(name, "stack")
        found: dict[str, Target] = {}
        if flt is not None:
            if names:  # names and a filter: the named stacks the filter keeps
                named = frozenset(names)
                flt = flt.with_names(named if flt.names is None else flt.names & named)
            for r in iter_stacks(session, flt):
                node = r.node.name if r.node else None
                found[r.name] = Target(r.id, r.name, node, r.state, r.priority, ())
        elif names:
            found = _named_targets(session, names)
        if request.action is OpAction.REMOVE and request.purge_inputs and found:
            purge = _purgeable_inputs(session, [t.id for t in found.values()], config)
            found = {n: replace(t, purge=purge.get(t.id, ())) for n, t in found.items()}
    listed = set(request.selection.names)
    ordered = [found[n] for n in request.selection.names if n in found]
    ordered += [t for n, t in found.items() if n not in listed]
    missing = [
        Target(-1, n, None, "unknown", 0, ()) for n in request.selection.names if n not in found
    ]
    return ordered + missing


#: Names per ``IN (...)`` of a named selection: within every backend's parameter limit.
_NAMES_PER_QUERY = 500


def _named_targets(session: Session, names: Sequence[str]) -> dict[str, Target]:
    """The named stacks as targets, read as plain columns: a bulk selection of thousands
    of stacks costs no ORM object per row."""
    found: dict[str, Target] = {}
    query = select(Stack.id, Stack.name, Node.name, Stack.state, Stack.priority).outerjoin(
        Node, Stack.node_id == Node.id
    )
    unique = list(dict.fromkeys(names))
    for start in range(0, len(unique), _NAMES_PER_QUERY):
        chunk = unique[start : start + _NAMES_PER_QUERY]
        for id_, name, node, state, priority in session.execute(query.where(Stack.name.in_(chunk))):
            found[name] = Target(id_, name, node, state, priority, ())
    return found


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
    """What ``request`` would do, stack by stack; nothing changes anywhere. Every node is
    asked at once (``plan_many``); dbspica is read on a worker thread."""
    targets = await asyncio.to_thread(select_targets, engine, request, config)
    unknown = [t.name for t in targets if t.id < 0]
    removed = await asyncio.to_thread(_removed, engine, unknown) if unknown else {}
    items: list[PlanItem | None] = []
    asks: list[tuple[int, Target, str | None]] = []
    allowed: set[str] = set()
    for i, target in enumerate(targets):
        checked = _check(request, target, removed, allowed)
        items.append(checked if isinstance(checked, PlanItem) else None)
        if not isinstance(checked, PlanItem):
            asks.append((i, target, checked))
    answers = await executor.plan_many([_target_change(request, t) for _, t, _ in asks])
    for (i, target, fallback), answer in zip(asks, answers, strict=True):
        items[i] = _planned(request, target, answer, fallback)
    return Plan(request, tuple(i for i in items if i is not None))


def _base(request: OperationRequest, target: Target) -> dict[str, Any]:
    return {
        "stack": target.name,
        "node": target.node,
        "state": target.state,
        "target": request.target_state,
        "priority": target.priority,
        "purge": target.purge,
        "stack_id": target.id if target.id >= 0 else None,
    }


def _check(
    request: OperationRequest, target: Target, removed: dict[str, str], allowed: set[str]
) -> PlanItem | str | None:
    """What dbspica alone says of ``target``: a refused item, or that its node must be asked
    (None; or the refusal to give if the node has no reason of its own). ``allowed``: the
    states already found to allow the action (the check depends on the state alone)."""
    if target.id < 0:
        return PlanItem(
            **_base(request, target),
            refused=f"no stack named {target.name} in dbspica{removed.get(target.name, '')}",
        )
    if target.state not in allowed:
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
                return PlanItem(**_base(request, target), refused=str(exc))
            # Already where this action leads: let the node say who moved it and when.
            return str(exc)
        allowed.add(target.state)
    if target.node is None:
        return PlanItem(
            **_base(request, target), refused=f"stack {target.name} has no node in dbspica"
        )
    return None


def _planned(
    request: OperationRequest, target: Target, answer: Answer, fallback: str | None
) -> PlanItem:
    """The plan item of ``target`` from its node's dry run (``fallback``: the refusal when
    the node was only asked for its reason)."""
    base = _base(request, target)
    if isinstance(answer, ProtocolError):
        return PlanItem(**base, refused=f"node {target.node}: {answer.message}")
    if fallback is not None:
        return PlanItem(**base, refused=fallback)
    if isinstance(answer, NodeUnreachable):
        return PlanItem(**base, refused=str(answer), unreachable=True)
    if not isinstance(answer, StackChange):  # AgentMissing, config errors: this stack only
        return PlanItem(**base, refused=f"node {target.node}: {answer}", unreachable=True)
    node_state = answer.from_
    if node_state and node_state != target.state:
        return PlanItem(
            **base,
            refused=f"drift: dbspica says {target.state}, node {target.node} says {node_state} "
            "(run spica reconcile)",
        )
    return PlanItem(**base, node_change=answer, db_change=_db_change(request, target))


def _removed(engine: Engine, stacks: Sequence[str]) -> dict[str, str]:
    """' (removed by USER at TIME)' of each of ``stacks`` whose remove the audit holds."""
    out: dict[str, str] = {}
    with Session(engine) as session:
        for stack in stacks:
            rows = session.scalars(
                select(OperatorAction)
                .where(OperatorAction.action == OpAction.REMOVE.value)
                .where(OperatorAction.result == Outcome.APPLIED.value)
                .where(OperatorAction.plan.contains(stack, autoescape=True))
                .order_by(OperatorAction.id.desc())
                .limit(50)
            )
            row = next((r for r in rows if r.targets == [stack]), None)
            if row:
                out[stack] = f" (removed by {row.user} at {iso(row.created_at)})"
    return out


# --------------------------------------------------------------------------------- apply


def _intent(request: OperationRequest, item: PlanItem) -> dict[str, Any]:
    """The ``operator_action`` row of one stack's intent (result ``pending``)."""
    return dict(
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


def _open_intents(
    session: Session, request: OperationRequest, items: Sequence[PlanItem]
) -> list[tuple[int, dict[str, Any]]]:
    """The intents of ``items``, written in one statement: each one's id and detail."""
    rows = [_intent(request, item) for item in items]
    ids = audit.open_intents(session, rows)
    return [(id_, row["detail"]) for id_, row in zip(ids, rows, strict=True)]


def _each_in_transactions(
    engine: Engine, items: Sequence[X], work: Callable[[Session, Sequence[X]], list[T]]
) -> list[T | SQLAlchemyError]:
    """``work`` of all items in one transaction; if that fails, of each item in its own, so
    one item's failure is its own. Objects stay readable after the commit."""

    def one_transaction(chunk: Sequence[X]) -> list[T]:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            done = work(session, chunk)
            session.flush()
            return done

    out: list[T | SQLAlchemyError] = []
    try:
        out += one_transaction(items)
        return out
    except SQLAlchemyError as exc:
        if len(items) == 1:
            return [exc]
    try:  # dbspica unreachable: every item would wait as long to fail the same way
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        return [exc] * len(items)
    for x in items:
        try:
            out += one_transaction([x])
        except SQLAlchemyError as exc:
            out.append(exc)
    return out


def finish_in_db(
    session: Session,
    action_id: int | None,
    item: PlanItem,
    action: OpAction,
    message: str,
    *,
    outcome: str = "applied",
) -> str:
    """The dbspica half of an applied stack, optimistic on the state, and its intent closed;
    returns a note."""
    stack_id = session.scalar(select(Stack.id).where(Stack.name == item.stack))
    ids = {item.stack: stack_id} if stack_id is not None else {}
    (note,) = _follow(session, [item], action, message, ids)
    if action_id is not None:
        _close(session, action_id, outcome, message + note)
    return note


def _follow(
    session: Session,
    items: Sequence[PlanItem],
    action: OpAction,
    message: str,
    ids: Mapping[str, int],
) -> list[str]:
    """Each stack's row follows its node's move (a stack not in ``ids`` has no row); a note
    for each."""
    notes = [""] * len(items)
    transitions: list[stack_state.Transition] = []
    moving: list[int] = []
    now = utcnow()  # one time for the whole chunk: its rows are written together
    for k, item in enumerate(items):
        stack_id = ids.get(item.stack)
        if stack_id is None:
            notes[k] = "; the stack's row was already gone"
            continue
        if action is OpAction.REMOVE:
            stack_state.remove(session, item.stack, item.state)
            continue
        values: dict[str, Any] = {}
        if action is OpAction.LAUNCH:
            values["launched_at"] = now
        if item.target == StackState.PENDING:
            values.update(error=None, exit_code=None)
            if item.node_change and item.node_change.from_start:
                values["progress"] = 0
        if action is OpAction.UNLOCK and item.target == StackState.FAILED:
            values["error"] = message
        if action is OpAction.UNLOCK:
            _end_run(session, stack_id, item.node_change)
        transitions.append(stack_state.Transition(item.stack, item.state, item.target, values))
        moving.append(k)
    # stale: the node decided that (an unlock of a live claim is refused)
    moved = stack_state.move_many(session, transitions, Actor.OPERATOR, action.value, stale=True)
    for k, m in zip(moving, moved, strict=True):
        if not m.applied and m.had != items[k].target:
            notes[k] = f"; dbspica had {m.had}, left as is (run spica reconcile)"
    return notes


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


def _close(session: Session, action_id: int, outcome: str, message: str) -> None:
    session.execute(
        update(OperatorAction)
        .where(OperatorAction.id == action_id)
        .values(result=outcome, detail=_merge_detail(session, action_id, message))
    )


def _note(session: Session, action_id: int, message: str, detail: dict[str, Any]) -> None:
    """Say why an intent stays pending."""
    session.execute(
        update(OperatorAction)
        .where(OperatorAction.id == action_id, OperatorAction.result == "pending")
        .values(detail={**detail, "message": message})
    )


async def apply(
    plan_: Plan,
    engine: Engine,
    executor: Executor,
    on_result: Callable[[ItemResult], None] | None = None,
    *,
    chunk_size: int = APPLY_CHUNK,
) -> list[ItemResult]:
    """Carry out every doable item of ``plan_``, ``chunk_size`` stacks at a time (1: stack
    by stack, each in transactions of its own); refused items are reported as refused.
    Results come in the plan's order (``on_result`` as each chunk is done)."""
    request = plan_.request
    results: list[ItemResult] = []
    for start in range(0, len(plan_.items), chunk_size):
        chunk = plan_.items[start : start + chunk_size]
        for result in await _apply_chunk(request, chunk, engine, executor):
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


async def _apply_chunk(
    request: OperationRequest, chunk: Sequence[PlanItem], engine: Engine, executor: Executor
) -> list[ItemResult]:
    """The intents of the chunk's doable stacks, then their moves on every node at once,
    then dbspica following; the results in the chunk's order."""
    out: list[ItemResult | None] = [
        ItemResult(i.stack, i.node, Outcome.REFUSED, i.refused, i.unreachable)
        if i.refused
        else None
        for i in chunk
    ]
    doable = [k for k, r in enumerate(out) if r is None]
    if not doable:
        return [r for r in out if r is not None]
    intents = await asyncio.to_thread(
        _each_in_transactions,
        engine,
        [chunk[k] for k in doable],
        lambda session, items: _open_intents(session, request, items),
    )
    sent: list[tuple[int, tuple[int, dict[str, Any]]]] = []
    for k, intent in zip(doable, intents, strict=True):
        if isinstance(intent, SQLAlchemyError):
            item = chunk[k]
            message = str(db_unavailable(engine, intent))
            out[k] = ItemResult(item.stack, item.node, Outcome.FAILED, message, True)
        else:
            sent.append((k, intent))
    if sent:
        _fault("after-intent")
        moves = [_item_change(request, chunk[k]) for k, _ in sent]
        answers = await executor.apply_many(moves)
        if any(isinstance(a, StackChange) for a in answers):
            _fault("after-node-commit")
        done = [
            (chunk[k], id_, detail, a) for (k, (id_, detail)), a in zip(sent, answers, strict=True)
        ]
        settled = await asyncio.to_thread(
            _each_in_transactions, engine, done, lambda session, ds: _settle(session, request, ds)
        )
        for (k, _), d, result in zip(sent, done, settled, strict=True):
            out[k] = (
                _unsettled(request, *d, result) if isinstance(result, SQLAlchemyError) else result
            )
    return [r for r in out if r is not None]


def _item_change(request: OperationRequest, item: PlanItem) -> Change:
    assert item.node is not None
    return _change(request, item.node, item.stack, item.priority, item.purge, item.stack_id)


def _answered(request: OperationRequest, item: PlanItem, answer: Answer) -> ItemResult:
    """What the node's answer makes of ``item``, before dbspica follows."""
    if isinstance(answer, StackChange):
        message = f"{item.state} -> {item.target} on {item.node}"
        if answer.resume_line:
            message += f", resumes at line {answer.resume_line}"
        return ItemResult(item.stack, item.node, Outcome.APPLIED, message)
    if isinstance(answer, ProtocolError):
        outcome = Outcome.REFUSED if answer.code == ErrorCode.WRONG_STATE else Outcome.FAILED
        return ItemResult(item.stack, item.node, outcome, f"node {item.node}: {answer.message}")
    if isinstance(answer, NodeAnswerLost):
        # The request went out: the node may have renamed. The intent stays pending, for
        # reconcile to decide from what the node shows.
        message = f"outcome unknown: {answer}; run spica reconcile"
        return ItemResult(item.stack, item.node, Outcome.UNKNOWN, message, True)
    if isinstance(answer, NodeUnreachable):
        return ItemResult(item.stack, item.node, Outcome.FAILED, str(answer), True)
    # AgentMissing, a configuration error: nothing was sent.
    return ItemResult(item.stack, item.node, Outcome.FAILED, f"node {item.node}: {answer}", True)


#: A stack sent to its node: its plan item, its intent (id, detail), the node's answer.
Sent = tuple[PlanItem, int, dict[str, Any], Answer]


def _settle(session: Session, request: OperationRequest, done: Sequence[Sent]) -> list[ItemResult]:
    """dbspica after the nodes' answers: each applied stack's row follows its node, and each
    intent is closed (or, its answer lost, says why it stays pending)."""
    applied = [k for k, d in enumerate(done) if isinstance(d[3], StackChange)]
    followed = [replace(i, node_change=a) for i, _, _, a in done if isinstance(a, StackChange)]
    names = [item.stack for item in followed]
    query = select(Stack.name, Stack.id).where(Stack.name.in_(names))
    ids: dict[str, int] = {name: id_ for name, id_ in session.execute(query)} if names else {}
    by = f"{request.action.value} by {request.user}"
    results = [_answered(request, item, answer) for item, _, _, answer in done]
    notes = dict(zip(applied, _follow(session, followed, request.action, by, ids), strict=True))
    closes: list[tuple[int, str, str]] = []
    for k, (_, action_id, detail, _) in enumerate(done):
        result = results[k]
        if k in notes:
            results[k] = replace(result, message=result.message + notes[k])
            message = by + notes[k]
        elif result.outcome is Outcome.UNKNOWN:
            _note(session, action_id, result.message, detail)
            continue
        else:
            message = result.message
        closes.append((action_id, result.outcome.value, message))
    audit.close_intents(session, closes)
    return results


def _unsettled(
    request: OperationRequest,
    item: PlanItem,
    action_id: int,
    detail: dict[str, Any],
    answer: Answer,
    exc: SQLAlchemyError,
) -> ItemResult:
    """The outcome when dbspica could not follow: an applied move is partial (reconcile
    finishes it); any other intent stays pending, and reconcile sees the node unchanged."""
    result = _answered(request, item, answer)
    if result.outcome is not Outcome.APPLIED:
        return result
    return ItemResult(
        item.stack,
        item.node,
        Outcome.PARTIAL,
        f"{result.message}; dbspica not updated ({describe_db_error(exc)}): "
        "spica reconcile --fix finishes it",
        True,
    )

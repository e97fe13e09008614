"""Drift between dbspica and the nodes, and how to converge.

The node's queue file is the execution truth (DESIGN §3); dbspica follows it. Reconcile finds
where it does not: unfinished operator actions (an apply interrupted between the node's
rename and dbspica), stacks whose states differ, queue files dbspica does not know, queue
files dbspica expects but the node lacks, stale claims, and running stacks on nodes that do
not answer. A node that cannot be asked is itself a finding (``node-unchecked``): reconcile
never says "no drift" about what it could not see. Each finding carries the fix ``--fix``
applies (None: report only). Every fix is an audited ``operator_action`` and is conditional
on the state seen, so a daemon moving the stack meanwhile is never overwritten.

An unfinished action is decided from the node's evidence, not only from its state now: the
daemon may have claimed and run a requeued stack, so that it is failed again (as before the
action) although the action reached the node. The claim counter (``stacks/<stack>/attempt``,
kept in the intent as the plan saw it), the launch record (who, when: kept in the claim), and
dbspica's ``stack_run`` rows of later attempts say whether it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, selectinload

from spica_core.config import SpicaConfig
from spica_core.daemon.journal import JOURNAL_BEHIND
from spica_core.db import stack_state
from spica_core.db.models import Node, OperatorAction, Problem, Stack, StackRun
from spica_core.db.types import utcnow
from spica_core.executor import ErrorRecord, Executor, QueueEntry, StackChange, Unlock
from spica_core.operations.actions import end_unlocked_run, finish_in_db
from spica_core.operations.model import OpAction, PlanItem
from spica_core.states import Action, Actor, StackState

QUEUE_STATES = (StackState.PENDING, StackState.RUNNING, StackState.COMPLETED, StackState.FAILED)
#: The kind of finding for a node reconcile could not ask (exit code 3).
UNCHECKED = "node-unchecked"
#: The kind of finding for a daemon journal dbspica went back in (an older backup restored).
JOURNAL = "journal-behind"


@dataclass(frozen=True)
class Drift:
    kind: str
    stack: str | None
    node: str | None
    detail: str
    #: What ``--fix`` does, in words; None when only an operator can decide.
    fix: str | None
    db_state: str | None = None
    node_state: str | None = None
    #: unfinished-action: the intent's row; journal-behind: the problem's.
    action_id: int | None = None
    error: ErrorRecord | None = None
    #: unfinished-action: whether the evidence says the action reached the node.
    reached: bool | None = None
    #: orphan-queue-file: the node's queue entry, its records rebuild the dbspica row.
    entry: QueueEntry | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stack": self.stack,
            "node": self.node,
            "detail": self.detail,
            "fix": self.fix,
            "db_state": self.db_state,
            "node_state": self.node_state,
        }


@dataclass(frozen=True)
class FixResult:
    drift: Drift
    ok: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return {**self.drift.to_json(), "fixed": self.ok, "message": self.message}


Queues = dict[str, dict[str, QueueEntry]]


async def _node_queues(executor: Executor) -> tuple[Queues, dict[str, str]]:
    """Every node's queue (stack -> entry), and the nodes that did not answer (-> why)."""
    import asyncio

    queues: Queues = {}
    down: dict[str, str] = {}

    async def one(name: str) -> None:
        try:
            entries = await executor.units(name, QUEUE_STATES)
        except Exception as exc:  # unreachable, refused, agent missing: not checked
            down[name] = str(exc)
            return
        queues[name] = {e.stack: e for e in entries}

    await asyncio.gather(*(one(n) for n in executor.hosts))
    return queues, down


def _node_state(queue: dict[str, QueueEntry], stack: str) -> str:
    entry = queue.get(stack)
    return entry.state.value if entry else "planned"


def exit_code(drifts: list[Drift], results: list[FixResult] | None) -> int:
    """0 nothing drifts (or all was fixed); 3 a node could not be checked; 1 drift remains."""
    if any(d.kind == UNCHECKED for d in drifts):
        return 3
    remaining = drifts if results is None else [r for r in results if not r.ok]
    return 1 if remaining else 0


async def find_drift(config: SpicaConfig, engine: Engine, executor: Executor) -> list[Drift]:
    queues, down = await _node_queues(executor)
    drifts: list[Drift] = [
        Drift(UNCHECKED, None, node, f"node {node} not checked: {why}", None)
        for node, why in sorted(down.items())
    ]
    with Session(engine) as session:
        intents = list(
            session.scalars(
                select(OperatorAction).where(
                    OperatorAction.result == "pending", OperatorAction.dry_run.is_(False)
                )
            )
        )
        stacks = list(session.scalars(select(Stack).options(selectinload(Stack.node))))
        behind = list(
            session.scalars(
                select(Problem).where(
                    Problem.resolved.is_(False),
                    Problem.message.like(JOURNAL_BEHIND.format(node="") + "%"),
                )
            )
        )
        names = [str((i.targets or [None])[0]) for i in intents]
        attempts = dict(
            session.execute(
                select(Stack.name, func.max(StackRun.attempt))
                .join(StackRun, StackRun.stack_id == Stack.id)
                .where(Stack.name.in_(names))
                .group_by(Stack.name)
            ).all()
        )
    drifts += [
        Drift(
            JOURNAL,
            None,
            p.node,
            p.message,
            "acknowledge it (problem resolved); the stacks dbspica lacks are registered by "
            "their orphan-queue-file fixes",
            action_id=p.id,
        )
        for p in behind
    ]
    db_states = {s.name: s.state for s in stacks}
    busy: set[str] = set()
    for intent in intents:
        detail = intent.detail or {}
        stack, node = (intent.targets or [None])[0], detail.get("node")
        busy.add(str(stack))
        seen = _DbSeen(db_states.get(str(stack)), attempts.get(str(stack)))
        drifts.append(_intent_drift(intent, str(stack), node, queues, down, seen))
    known: dict[str, set[str]] = {}
    for s in stacks:
        node = s.node.name if s.node else None
        if node is None or s.name in busy:
            continue
        known.setdefault(node, set()).add(s.name)
        if node in down:
            if s.state == "running":
                drifts.append(
                    Drift(
                        "node-down",
                        s.name,
                        node,
                        f"running on {node}, which does not answer: {down[node]}",
                        None,
                        s.state,
                    )
                )
            continue
        if node not in queues:
            continue
        entry = queues[node].get(s.name)
        node_state = _node_state(queues[node], s.name)
        if node_state == "running" and entry and _stale(entry):
            drifts.append(
                Drift(
                    "stale-claim",
                    s.name,
                    node,
                    f"claimed by dead pid {entry.claim.pid if entry.claim else None}",
                    "unlock it on the node to failed; dbspica follows",
                    s.state,
                    node_state,
                )
            )
            continue
        if node_state == s.state:
            continue
        if s.state != "planned" and node_state == "planned":
            drifts.append(
                Drift(
                    "missing-queue-file",
                    s.name,
                    node,
                    f"dbspica says {s.state}, the node has no queue file",
                    "dbspica -> planned (no queue file)",
                    s.state,
                    node_state,
                )
            )
        else:
            drifts.append(
                Drift(
                    "state",
                    s.name,
                    node,
                    f"dbspica says {s.state}, the node says {node_state}",
                    f"dbspica -> {node_state} (the node is the truth)",
                    s.state,
                    node_state,
                    error=entry.error if entry else None,
                )
            )
    for node, queue in queues.items():
        for stack, entry in queue.items():
            if stack not in known.get(node, set()) and stack not in busy:
                drifts.append(
                    Drift(
                        "orphan-queue-file",
                        stack,
                        node,
                        f"queue/{stack} ({entry.state}) has no dbspica row",
                        f"register it in dbspica as {entry.state} on {node}",
                        None,
                        entry.state.value,
                        entry=entry,
                    )
                )
    return drifts


def _stale(entry: QueueEntry) -> bool:
    claim = entry.claim
    return claim is not None and not claim.alive and not claim.daemon_alive


@dataclass(frozen=True)
class _DbSeen:
    """What dbspica holds of an intent's stack now: its state, its latest run attempt."""

    state: str | None
    attempt: int | None


def _intent_drift(
    intent: OperatorAction,
    stack: str,
    node: str | None,
    queues: Queues,
    down: dict[str, str],
    seen: _DbSeen,
) -> Drift:
    detail = intent.detail or {}
    before, after = detail.get("from"), detail.get("to")
    what = f"{intent.action} by {intent.user} at {intent.created_at:%Y-%m-%d %H:%M:%S} unfinished"
    if node is None or node in down or node not in queues:
        return Drift(
            "unfinished-action",
            stack,
            node,
            f"{what}; node {node} does not answer",
            None,
            seen.state,
            action_id=intent.id,
        )
    entry = queues[node].get(stack)
    now = _node_state(queues[node], stack)
    evidence = _reached_node(intent, entry, seen.attempt)
    if evidence is not None:
        if now == after or (after == "removed" and now == "planned"):
            fix = f"finish it ({evidence}): dbspica {before} -> {after}"
        elif seen.state == now:
            fix = f"finish it ({evidence}): dbspica already says {now}, as the node"
        else:
            fix = f"finish it ({evidence}): dbspica -> {now}, the node's state now"
    elif now == before:
        fix = "roll it back: the node never changed; mark the action failed"
    else:
        fix = f"close it as failed; the node now says {now}"
    return Drift(
        "unfinished-action",
        stack,
        node,
        f"{what}; node says {now}",
        fix,
        seen.state,
        now,
        action_id=intent.id,
        error=entry.error if entry else None,
        reached=evidence is not None,
    )


def _reached_node(
    intent: OperatorAction, entry: QueueEntry | None, db_attempt: int | None
) -> str | None:
    """The node's evidence that ``intent`` was carried out there, in words; None if none.

    A stack the action made pending may since have been claimed, run, and completed or
    failed again: a claim counter above the one the plan saw (on the node, or in dbspica's
    runs) proves a claim since, and the claim keeps whose launch it took.
    """
    detail = intent.detail or {}
    after, user = detail.get("to"), intent.user
    now = entry.state.value if entry else "planned"
    if after == "removed":
        return "the node has no queue file left" if now == "planned" else None
    if now == after == "pending":
        by = entry.launch.by if entry and entry.launch else None
        if by in (None, user):
            return f"the node's launch record is {by or 'unsigned'}'s"
        return None
    planned_attempt = detail.get("attempt")
    if after == "pending" and isinstance(planned_attempt, int):
        claim = entry.claim if entry else None
        attempt = entry.attempt if entry else None
        launched_by = claim.launched_by if claim else None
        if isinstance(attempt, int) and attempt > planned_attempt and launched_by in (None, user):
            by = f", launched by {launched_by} at {claim.launched_at}" if claim else ""
            return f"the daemon claimed it since: attempt {attempt}{by}"
        if db_attempt is not None and db_attempt > planned_attempt:
            return f"dbspica holds runs of attempt {db_attempt}, the plan saw {planned_attempt}"
        return None
    if after == "failed" and now == "failed":
        message = entry.error.message if entry and entry.error else ""
        return (
            "the node's error record says so" if message.startswith(f"unlocked by {user}") else None
        )
    return f"the node says {now}" if now == after else None


async def fix_drift(
    drifts: list[Drift], engine: Engine, executor: Executor, user: str
) -> list[FixResult]:
    results = []
    for d in drifts:
        if d.fix is None:
            results.append(FixResult(d, False, "report only: an operator must decide"))
            continue
        try:
            message = await _fix_one(d, engine, executor, user)
            ok = True
        except Exception as exc:  # one fix failing never stops the others
            message, ok = f"not fixed: {exc}", False
        results.append(FixResult(d, ok, message))
        _audit(engine, user, d, ok, message)
    return results


def _audit(engine: Engine, user: str, d: Drift, ok: bool, message: str) -> None:
    with Session(engine) as session, session.begin():
        session.add(
            OperatorAction(
                user=user,
                action="reconcile",
                targets=[d.stack] if d.stack else [],
                dry_run=False,
                plan=f"{d.kind}: {d.detail}; fix: {d.fix}",
                result="applied" if ok else "failed",
                detail={"message": message, "node": d.node},
            )
        )


async def _fix_one(d: Drift, engine: Engine, executor: Executor, user: str) -> str:
    if d.kind == JOURNAL:
        with Session(engine) as session, session.begin():
            session.execute(
                update(Problem)
                .where(Problem.id == d.action_id)
                .values(resolved=True, resolved_at=utcnow())
            )
        return "acknowledged: problem resolved"
    assert d.stack is not None
    if d.kind == "unfinished-action":
        assert d.action_id is not None
        with Session(engine) as session:
            intent = session.get(OperatorAction, d.action_id)
            assert intent is not None
            detail = dict(intent.detail or {})
            action = intent.action
        after = detail.get("to")
        finished = f"{action} by {intent.user}, finished by reconcile ({user})"
        if d.reached and (
            d.node_state == after or (after == "removed" and d.node_state == "planned")
        ):
            before = str(detail.get("from"))
            change = StackChange(
                stack=d.stack,
                from_=before,
                to=str(after),
                from_start=bool(detail.get("from_start")),
            )
            item = PlanItem(d.stack, d.node, before, str(after), change)
            with Session(engine) as session, session.begin():
                finish_in_db(session, d.action_id, item, OpAction(action), finished)
            return f"finished: dbspica -> {after}"
        if d.reached:
            assert d.node_state is not None
            _close_applied(engine, d, f"{finished}: the node has moved on to {d.node_state}")
            return f"finished: the action was applied; dbspica -> {d.node_state}"
        with Session(engine) as session, session.begin():
            session.execute(
                update(OperatorAction)
                .where(OperatorAction.id == d.action_id)
                .values(
                    result="failed",
                    detail={
                        **detail,
                        "message": f"rolled back by reconcile ({user}): node says {d.node_state}",
                    },
                )
            )
        return "rolled back: action marked failed"
    if d.kind == "stale-claim":
        assert d.node is not None
        change = await executor.apply(Unlock(d.node, d.stack, user))
        end_unlocked_run(engine, d.stack, change)
        message = f"unlocked by reconcile ({user}): its claimer was dead"
        with Session(engine) as session, session.begin():
            _applied(
                stack_state.mirror(
                    session,
                    d.stack,
                    StackState.RUNNING,
                    StackState.FAILED,
                    Actor.OPERATOR,
                    Action.UNLOCK,
                    stale=True,
                    values={"error": message, "failed_line": None},
                    seen=str(d.db_state),
                )
            )
        return "unlocked to failed"
    if d.kind in ("state", "missing-queue-file"):
        with Session(engine) as session, session.begin():
            _take_node_state(session, d)
        return f"dbspica -> {d.node_state}"
    if d.kind == "orphan-queue-file":
        with Session(engine) as session, session.begin():
            node = session.scalars(select(Node).where(Node.name == d.node)).one()
            _register_orphan(session, d, node.id)
        return f"registered as {d.node_state}"
    raise ValueError(f"no fix for {d.kind}")


def _applied(moved: stack_state.Moved) -> None:
    """Refuse a fix whose stack dbspica changed since reconcile looked at it."""
    if not moved.applied:
        raise RuntimeError(f"stack {moved.stack} changed in dbspica meanwhile; run reconcile again")


def _register_orphan(session: Session, d: Drift, node_id: int) -> None:
    """A dbspica row for a stack only its node knows (queued by hand, or lost by a restored
    dbspica), rebuilt from what the node's records hold: priority, resume point, error."""
    entry = d.entry
    launch = (entry.launch or entry.claim) if entry else None
    error = entry.error if entry else None
    stack_state.register(
        session,
        str(d.node_state),
        name=d.stack,
        node_id=node_id,
        step="unknown",
        priority=(launch.priority if launch else None) or 0,
        lines=(entry.lines if entry else None) or 0,
        progress=(entry.progress if entry else None) or 0,
        failed_line=error.line if error else None,
        exit_code=error.exit_code if error else None,
        error=error.message if error else None,
    )


def _take_node_state(session: Session, d: Drift) -> None:
    """dbspica's row of ``d.stack`` takes the node's state (and error), if still as seen."""
    assert d.stack is not None and d.node_state is not None
    values: dict[str, Any] = {}
    if d.node_state == "failed":
        error = d.error
        values.update(
            error=error.message if error else None, failed_line=error.line if error else None
        )
    _applied(stack_state.follow(session, d.stack, str(d.db_state), d.node_state, values=values))


def _close_applied(engine: Engine, d: Drift, message: str) -> None:
    """An action that reached the node, which has moved on since: the intent becomes
    ``applied`` and dbspica takes the node's state, in one transaction."""
    assert d.stack is not None and d.node_state is not None and d.action_id is not None
    with Session(engine) as session, session.begin():
        intent = session.get(OperatorAction, d.action_id)
        assert intent is not None
        intent.result = "applied"
        intent.detail = {**(intent.detail or {}), "message": message}
        if d.db_state is not None and d.db_state != d.node_state:
            _take_node_state(session, d)

"""Drift between dbspica and the nodes, and how to converge.

The node's queue file is the execution truth (DESIGN §3); dbspica follows it. Reconcile finds
where it does not: unfinished operator actions (an apply interrupted between the node's
rename and dbspica), stacks whose states differ, queue files dbspica does not know, queue
files dbspica expects but the node lacks, stale claims, and running stacks on nodes that do
not answer. Each finding carries the fix ``--fix`` applies (None: report only). Every fix is
an audited ``operator_action`` and is conditional on the state seen, so a daemon moving the
stack meanwhile is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, selectinload

from spica_core.config import SpicaConfig
from spica_core.db.models import Node, OperatorAction, Stack
from spica_core.db.types import utcnow
from spica_core.errors import NodeUnreachable
from spica_core.node_pool import NodePool
from spica_core.node_protocol import ProtocolError, Verb
from spica_core.operations.actions import end_unlocked_run, finish_in_db
from spica_core.operations.model import OpAction, PlanItem

QUEUE_STATES = ("pending", "running", "completed", "failed")


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
    action_id: int | None = None
    error: dict[str, Any] | None = None

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


async def _node_queues(
    pool: NodePool,
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str]]:
    """Every node's queue (stack -> entry), and the nodes that did not answer (-> why)."""
    import asyncio

    queues: dict[str, dict[str, dict[str, Any]]] = {}
    down: dict[str, str] = {}

    async def one(name: str) -> None:
        try:
            status = await pool.call(
                name, Verb.STATUS, {"partitions": [], "states": list(QUEUE_STATES)}
            )
        except (NodeUnreachable, ProtocolError, Exception) as exc:
            down[name] = str(exc)
            return
        queues[name] = {e["stack"]: e for e in status.get("queue") or []}

    await asyncio.gather(*(one(n) for n in pool.links))
    return queues, down


def _node_state(queue: dict[str, dict[str, Any]], stack: str) -> str:
    entry = queue.get(stack)
    return entry["state"] if entry else "planned"


async def find_drift(config: SpicaConfig, engine: Engine, pool: NodePool) -> list[Drift]:
    queues, down = await _node_queues(pool)
    drifts: list[Drift] = []
    with Session(engine) as session:
        intents = list(
            session.scalars(
                select(OperatorAction).where(
                    OperatorAction.result == "pending", OperatorAction.dry_run.is_(False)
                )
            )
        )
        stacks = list(session.scalars(select(Stack).options(selectinload(Stack.node))))
    busy: set[str] = set()
    for intent in intents:
        detail = intent.detail or {}
        stack, node = (intent.targets or [None])[0], detail.get("node")
        busy.add(str(stack))
        drifts.append(_intent_drift(intent, str(stack), node, queues, down))
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
                    f"claimed by dead pid {(entry.get('claim') or {}).get('pid')}",
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
                    error=(entry or {}).get("error"),
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
                        f"queue/{stack} ({entry['state']}) has no dbspica row",
                        f"register it in dbspica as {entry['state']} on {node}",
                        None,
                        entry["state"],
                    )
                )
    return drifts


def _stale(entry: dict[str, Any]) -> bool:
    claim = entry.get("claim")
    return bool(claim) and not claim.get("alive") and not claim.get("daemon_alive")


def _intent_drift(
    intent: OperatorAction,
    stack: str,
    node: str | None,
    queues: dict[str, dict[str, dict[str, Any]]],
    down: dict[str, str],
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
            before,
            action_id=intent.id,
        )
    now = _node_state(queues[node], stack)
    if now == after or (after == "removed" and now == "planned"):
        fix = f"finish it: dbspica {before} -> {after}"
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
        before,
        now,
        action_id=intent.id,
    )


async def fix_drift(
    drifts: list[Drift], engine: Engine, pool: NodePool, user: str
) -> list[FixResult]:
    results = []
    for d in drifts:
        if d.fix is None:
            results.append(FixResult(d, False, "report only: an operator must decide"))
            continue
        try:
            message = await _fix_one(d, engine, pool, user)
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


async def _fix_one(d: Drift, engine: Engine, pool: NodePool, user: str) -> str:
    assert d.stack is not None
    if d.kind == "unfinished-action":
        assert d.action_id is not None
        with Session(engine) as session:
            intent = session.get(OperatorAction, d.action_id)
            assert intent is not None
            detail = dict(intent.detail or {})
            action = intent.action
        after = detail.get("to")
        if d.node_state == after or (after == "removed" and d.node_state == "planned"):
            item = PlanItem(
                d.stack,
                d.node,
                str(detail.get("from")),
                str(after),
                {"from_start": detail.get("from_start")},
            )
            finish_in_db(
                engine,
                d.action_id,
                item,
                OpAction(action),
                f"{action} by {intent.user}, finished by reconcile ({user})",
            )
            return f"finished: dbspica -> {after}"
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
        change = await pool.call(
            d.node, Verb.UNLOCK, {"stack": d.stack, "to": "failed", "by": user}
        )
        end_unlocked_run(engine, d.stack, change)
        _set_state(
            engine,
            d.stack,
            d.db_state,
            "failed",
            f"unlocked by reconcile ({user}): its claimer was dead",
        )
        return "unlocked to failed"
    if d.kind in ("state", "missing-queue-file"):
        assert d.node_state is not None
        error = (d.error or {}).get("message") if d.node_state == "failed" else None
        _set_state(
            engine,
            d.stack,
            d.db_state,
            d.node_state,
            error,
            failed_line=(d.error or {}).get("line"),
        )
        return f"dbspica -> {d.node_state}"
    if d.kind == "orphan-queue-file":
        with Session(engine) as session, session.begin():
            node = session.scalars(select(Node).where(Node.name == d.node)).one()
            session.add(
                Stack(name=d.stack, node_id=node.id, state=str(d.node_state), step="unknown")
            )
        return f"registered as {d.node_state}"
    raise ValueError(f"no fix for {d.kind}")


def _set_state(
    engine: Engine,
    stack: str,
    seen: str | None,
    state: str,
    error: str | None,
    failed_line: int | None = None,
) -> None:
    values: dict[str, Any] = {"state": state, "updated_at": utcnow()}
    if state == "failed":
        values.update(error=error, failed_line=failed_line)
    with Session(engine) as session, session.begin():
        done = session.execute(
            update(Stack).where(Stack.name == stack, Stack.state == seen).values(**values)
        ).rowcount
    if not done:
        raise RuntimeError(f"stack {stack} changed in dbspica meanwhile; run reconcile again")

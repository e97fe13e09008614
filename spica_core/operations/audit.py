"""The audit trail: every applied, refused or dry-run operator request is a row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.orm import Session

from spica_core.db.models import OperatorAction
from spica_core.operations.model import OperationRequest, Plan, PlanItem
from spica_core.reports import iso


def record_request(engine: Engine, plan: Plan, *, dry_run: bool) -> None:
    """One row for a dry run (every target) or for the refused part of an apply.

    Applied stacks have their own rows, written as intents before anything changes.
    """
    items = plan.items if dry_run else plan.refused
    if not items:
        return
    with Session(engine) as session, session.begin():
        session.add(
            OperatorAction(
                user=plan.request.user,
                action=plan.request.action.value,
                targets=[i.stack for i in items],
                dry_run=dry_run,
                plan=plan.render(),
                result="dry-run" if dry_run else "refused",
                detail={"refused": {i.stack: i.refused for i in plan.refused}},
            )
        )


def record_refused(
    engine: Engine, request: OperationRequest, stack: str, node: str | None, reason: str
) -> None:
    """The refused row of a request refused before any plan could be made (``stack add
    --launch`` of a name that is taken), the same row a refused plan item leaves."""
    item = PlanItem(stack, node, "unknown", request.target_state, refused=reason)
    record_request(engine, Plan(request, (item,)), dry_run=False)


def audit_json(row: OperatorAction) -> dict[str, Any]:
    return {
        "id": row.id,
        "time": iso(row.created_at),
        "user": row.user,
        "action": row.action,
        "targets": row.targets,
        "dry_run": row.dry_run,
        "result": row.result,
        "plan": row.plan,
        "message": (row.detail or {}).get("message"),
    }


def list_actions(
    engine: Engine, since: datetime | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Audit rows, newest first."""
    stmt = select(OperatorAction).order_by(
        OperatorAction.created_at.desc(), OperatorAction.id.desc()
    )
    if since is not None:
        stmt = stmt.where(OperatorAction.created_at >= since)
    if limit is not None:
        stmt = stmt.limit(limit)
    with Session(engine) as session:
        return [audit_json(r) for r in session.scalars(stmt)]


#: Rows per statement when intents are opened or closed: within every backend's limits.
_ROWS_PER_STATEMENT = 500


def open_intents(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``operator_action`` rows (the columns of each as a dict) in one statement;
    their ids, in ``rows``' order."""
    if not rows:
        return []
    statement = insert(OperatorAction).returning(OperatorAction.id, sort_by_parameter_order=True)
    return list(session.scalars(statement, list(rows)))


def close_intents(session: Session, closes: Sequence[tuple[int, str, str]]) -> None:
    """Set the ``result`` of each ``(id, result, message)`` and add the message to its
    ``detail``: one ``UPDATE … WHERE id IN (…)`` per (result, message) and few hundred
    rows (a bulk apply has a handful), not a round trip per row."""
    groups: dict[tuple[str, str], list[int]] = {}
    for id_, result, message in closes:
        groups.setdefault((result, message), []).append(id_)
    for (result, message), ids in groups.items():
        for start in range(0, len(ids), _ROWS_PER_STATEMENT):
            session.execute(
                update(OperatorAction)
                .where(OperatorAction.id.in_(ids[start : start + _ROWS_PER_STATEMENT]))
                .values(
                    result=result,
                    detail=func.json_set(OperatorAction.detail, "$.message", message),
                )
            )

"""The audit trail: every applied, refused or dry-run operator request is a row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, bindparam, case, insert, select, update
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


#: Rows per statement when intents are closed: within every backend's parameter limit.
_ROWS_PER_UPDATE = 300


def open_intents(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``operator_action`` rows (the columns of each as a dict) in one statement;
    their ids, in ``rows``' order."""
    if not rows:
        return []
    statement = insert(OperatorAction).returning(OperatorAction.id, sort_by_parameter_order=True)
    return list(session.scalars(statement, list(rows)))


def close_intents(session: Session, closes: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
    """Set ``result`` and ``detail`` of each ``(id, result, detail)``: one ``UPDATE … CASE``
    per few hundred rows, not a round trip per row."""
    table = cast(Table, OperatorAction.__table__)
    detail_type = table.c.detail.type
    for start in range(0, len(closes), _ROWS_PER_UPDATE):
        chunk = closes[start : start + _ROWS_PER_UPDATE]
        results = {id_: result for id_, result, _ in chunk}
        details = [
            (table.c.id == id_, bindparam(None, detail, type_=detail_type))
            for id_, _, detail in chunk
        ]
        session.execute(
            update(table)
            .where(table.c.id.in_(list(results)))
            .values(result=case(results, value=table.c.id), detail=case(*details))
        )

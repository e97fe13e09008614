"""Ending the ``stack_run`` rows of a claim whose daemon died: the one owner of that rule,
for the daemon's recovery (journal replay) and for an operator's unlock (operations)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from spica_core.db.models import StackRun
from spica_core.db.types import affected_rows


def end_dead_runs(
    session: Session,
    stack_id: int,
    attempt: int,
    line: int | None,
    exit_code: int | None,
    at: datetime,
) -> int:
    """End the rows of ``attempt`` still open (no ``ended_at``): they will never end, their
    daemon is dead. ``line`` (the line that was running) gets ``exit_code`` — 137 when it was
    killed — any other open row none. How many rows were ended."""
    open_rows = (
        StackRun.stack_id == stack_id,
        StackRun.attempt == attempt,
        StackRun.ended_at.is_(None),
    )
    ended = 0
    if line is not None:
        ended += affected_rows(
            session.execute(
                update(StackRun)
                .where(*open_rows, StackRun.line == line)
                .values(ended_at=at, exit_code=exit_code)
            )
        )
    others = session.scalars(select(StackRun.id).where(*open_rows)).all()
    if others:
        ended += affected_rows(
            session.execute(update(StackRun).where(StackRun.id.in_(others)).values(ended_at=at))
        )
    return ended


def wire_time(text: str) -> datetime:
    """An ISO 8601 time from a node (``…Z``) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

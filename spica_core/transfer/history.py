"""``spica transfer history``: every copy's row, as operators and scripts read it.

The JSON keys of :meth:`HistoryRow.to_json` are the stable shape of ``--json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Transfer


@dataclass(frozen=True)
class HistoryRow:
    id: int
    runid: str | None
    filename: str
    filter: str | None
    plan_id: str | None
    source: str
    source_node: str | None
    node: str
    partition: str | None
    path: str | None
    bytes: int
    checksum: str | None
    node_checksum: str | None
    state: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.__dict__.items()
        }


def transfer_history(
    engine: Engine, *, runid: str | None = None, limit: int | None = None
) -> list[HistoryRow]:
    """Transfer rows, newest first (by id: the order they were planned in, reversed)."""
    query = select(Transfer).order_by(Transfer.id.desc())
    if runid is not None:
        query = query.where(Transfer.runid == runid)
    if limit is not None:
        query = query.limit(limit)
    with Session(engine) as session:
        return [
            HistoryRow(
                id=t.id,
                runid=t.runid,
                filename=t.filename,
                filter=t.filter,
                plan_id=t.plan_id,
                source=t.source,
                source_node=t.source_node,
                node=t.destination_node,
                partition=t.destination_partition,
                path=t.destination_path,
                bytes=t.bytes,
                checksum=t.checksum,
                node_checksum=t.node_checksum,
                state=t.state,
                attempts=t.attempts,
                created_at=t.created_at,
                started_at=t.started_at,
                finished_at=t.finished_at,
                updated_at=t.updated_at,
                error=t.error,
            )
            for t in session.scalars(query)
        ]

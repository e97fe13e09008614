"""Transfers in progress, per runid, from the ``transfer`` rows: what the DataTransfer
screen draws as a bar and a throughput.

A runid is shown while any of its rows is not ``done`` (planned, running, interrupted,
failed), and for a while after its last file landed (``since``), so a copy that took a
second is still seen. The throughput is the bytes landed over the time since the first file
started: to now while files are under way, to the last landing once all are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from spica_core.db.models import Transfer
from spica_core.read_model.scope import EVERYTHING, Scope
from spica_core.reports import iso


@dataclass(frozen=True)
class RunidProgress:
    """One runid's transfer rows summed up."""

    runid: str
    files: int
    done: int
    running: int
    #: Planned or interrupted: waiting for a copy run.
    waiting: int
    failed: int
    bytes: int
    done_bytes: int
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def active(self) -> bool:
        return self.done + self.failed < self.files

    @property
    def fraction(self) -> float:
        """Share of the bytes landed (of the files when sizes are unknown)."""
        if self.bytes:
            return self.done_bytes / self.bytes
        return self.done / self.files if self.files else 0.0

    def throughput(self, now: datetime) -> float | None:
        """Bytes per second landed since the first file started; None before any landed."""
        if self.started_at is None or not self.done_bytes:
            return None
        end = now if self.active or self.finished_at is None else self.finished_at
        seconds = (_utc(end) - _utc(self.started_at)).total_seconds()
        return self.done_bytes / max(seconds, 1e-3)

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "runid": self.runid,
            "files": self.files,
            "done": self.done,
            "running": self.running,
            "waiting": self.waiting,
            "failed": self.failed,
            "bytes": self.bytes,
            "done_bytes": self.done_bytes,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "bytes_per_second": self.throughput(now),
        }


def _utc(when: datetime) -> datetime:
    """dbspica answers aware UTC times; a naive time (a caller's) is taken as UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def transfer_progress(
    engine: Engine, scope: Scope = EVERYTHING, *, since: datetime | None = None
) -> list[RunidProgress]:
    """Runids with a transfer not done, or (``since`` given) one done at or after it;
    runids under way first, then the most recently finished."""
    stmt = (
        select(
            Transfer.runid,
            Transfer.state,
            func.count(Transfer.id),
            func.sum(Transfer.bytes),
            func.min(Transfer.started_at),
            func.max(Transfer.finished_at),
        )
        .where(Transfer.runid.is_not(None))
        .group_by(Transfer.runid, Transfer.state)
    )
    if scope.runids is not None:
        stmt = stmt.where(Transfer.runid.in_(sorted(scope.runids)))
    rows: dict[str, dict[str, Any]] = {}
    with Session(engine) as session:
        for runid, state, count, size, started, finished in session.execute(stmt):
            r = rows.setdefault(
                str(runid),
                {"files": 0, "by_state": {}, "bytes": 0, "done_bytes": 0, "start": [], "end": []},
            )
            r["files"] += int(count)
            r["by_state"][state] = int(count)
            r["bytes"] += int(size or 0)
            if state == "done":
                r["done_bytes"] += int(size or 0)
            if started is not None:
                r["start"].append(started)
            if finished is not None and state == "done":
                r["end"].append(finished)
    out: list[RunidProgress] = []
    for runid, r in rows.items():
        states = r["by_state"]
        p = RunidProgress(
            runid=runid,
            files=r["files"],
            done=states.get("done", 0),
            running=states.get("running", 0),
            waiting=states.get("planned", 0) + states.get("interrupted", 0),
            failed=states.get("failed", 0),
            bytes=r["bytes"],
            done_bytes=r["done_bytes"],
            started_at=min(r["start"]) if r["start"] else None,
            finished_at=max(r["end"]) if r["end"] else None,
        )
        recent = (
            since is not None and p.finished_at is not None and _utc(p.finished_at) >= _utc(since)
        )
        if p.active or recent:
            out.append(p)
    oldest = datetime.min.replace(tzinfo=UTC)
    latest = {p.runid: _utc(p.finished_at) if p.finished_at else oldest for p in out}
    out.sort(key=lambda p: p.runid)
    out.sort(key=lambda p: latest[p.runid], reverse=True)
    out.sort(key=lambda p: not p.active)
    return out


__all__ = ["RunidProgress", "transfer_progress"]

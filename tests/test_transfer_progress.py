"""Transfers in progress per runid (the DataTransfer screen's bars), from ``transfer`` rows
written by hand with known sizes and times, on SQLite and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from spica_core.db.models import Transfer
from spica_core.read_model.scope import Scope
from spica_core.read_model.transfer_progress import transfer_progress

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(seconds=10)


def add(session: Session, runid: str, state: str, size: int, start: int | None, end: int | None):
    session.add(
        Transfer(
            filename=f"{runid}-{len(session.new)}p",
            runid=runid,
            source=f"/incoming/{runid}/x.fits",
            destination_node="mix1",
            bytes=size,
            state=state,
            created_at=T0,
            started_at=None if start is None else T0 + timedelta(seconds=start),
            finished_at=None if end is None else T0 + timedelta(seconds=end),
        )
    )


@pytest.fixture
def rows(db_engine):
    with Session(db_engine) as s, s.begin():
        # under way: 2 done (1,000 + 2,000 bytes), 1 copying, 1 planned
        add(s, "03AL01", "done", 1000, 0, 2)
        add(s, "03AL01", "done", 2000, 1, 4)
        add(s, "03AL01", "running", 3000, 5, None)
        add(s, "03AL01", "planned", 4000, None, None)
        # done long ago: shown only with an old enough ``since``
        add(s, "03AL02", "done", 500, -7200, -7100)
        # done a moment ago: 6,000 bytes from t=2 to t=8
        add(s, "03AQ97", "done", 6000, 2, 5)
        add(s, "03AQ97", "done", 0, 3, 8)
        # one failed, one interrupted: not finished
        add(s, "04BL06", "failed", 100, 0, 1)
        add(s, "04BL06", "interrupted", 100, 0, None)
    return db_engine


def test_progress_per_runid(rows) -> None:
    shown = transfer_progress(rows, since=NOW - timedelta(minutes=5))
    assert [p.runid for p in shown] == ["03AL01", "04BL06", "03AQ97"]
    a, b, c = shown
    assert (a.files, a.done, a.running, a.waiting, a.failed) == (4, 2, 1, 1, 0)
    assert (a.bytes, a.done_bytes) == (10_000, 3000)
    assert a.active and a.fraction == pytest.approx(0.3)
    # under way: landed bytes over the time since the first start, to now
    assert a.throughput(NOW) == pytest.approx(3000 / 10)
    assert (b.failed, b.waiting, b.active) == (1, 1, True)
    assert b.throughput(NOW) is None  # nothing landed
    assert not c.active and c.fraction == 1.0
    # finished: to the last landing, not to now
    assert c.throughput(NOW + timedelta(hours=1)) == pytest.approx(6000 / 6)
    assert c.to_json(NOW)["bytes_per_second"] == pytest.approx(1000.0)


def test_old_transfers_and_scope(rows) -> None:
    assert "03AL02" not in {p.runid for p in transfer_progress(rows)}
    old = transfer_progress(rows, since=NOW - timedelta(hours=3))
    assert [p.runid for p in old][-1] == "03AL02"  # the oldest finished last
    scoped = transfer_progress(rows, Scope(runids=frozenset({"03AQ97"})), since=T0)
    assert [p.runid for p in scoped] == ["03AQ97"]

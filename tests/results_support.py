"""Rows the results tests seed: a stack's finished lines as the daemon records them, and
QFin-measured images."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from spica_core.db.models import Image, StackRun


def add_runs(
    session: Session,
    stack_id: int,
    node: str,
    lines: Sequence[tuple[Sequence[str], float]],
    start: datetime,
) -> datetime:
    """One finished run per ``(argv, seconds)``, back to back from ``start``; returns when
    the last one ended."""
    for number, (argv, seconds) in enumerate(lines, 1):
        end = start + timedelta(seconds=seconds)
        session.add(
            StackRun(
                stack_id=stack_id,
                line=number,
                command=shlex.join(argv),
                node=node,
                started_at=start,
                ended_at=end,
                exit_code=0,
            )
        )
        start = end
    return start


def add_images(
    session: Session,
    rows: Iterable[tuple[int, str, float | None, str]],
    *,
    prefix: str = "8",
) -> None:
    """Images ``<prefix><i>p`` from ``(runid id, filter, seeing, qf_status)`` rows."""
    for i, (runid_id, flt, seeing, qf) in enumerate(rows):
        session.add(
            Image(
                filename=f"{prefix}{i:05d}p",
                runid_id=runid_id,
                filter=flt,
                seeing=seeing,
                qf_status=qf,
            )
        )

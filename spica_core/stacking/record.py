"""``spica stack record``: the last line of a stack unit writes what the co-add came to.

The figures are read from the unit's outputs (:func:`spica_core.stacking.figures.
stack_figures`); the time spent per step from the unit's ``stack_run`` rows (by tool, the
last attempt of each line). ONE transaction upserts the stack's ``stack_result`` row; then
``<stack>.result.json`` is written beside the co-add (atomically), last: its presence means
done. A requeued record line rewrites both, so dbspica never holds half a result.

Unusable outputs raise :class:`~spica_core.stacking.prepare.StackFailed` naming the stack
and the file: the command exits non-zero and the daemon fails the unit at this line (its
problem row is the daemon's).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Stack, StackResult, StackRun
from spica_core.db.types import utcnow
from spica_core.errors import NotFound
from spica_core.names import validate_name
from spica_core.node.files import atomic_write
from spica_core.stacking.figures import StackFigures, stack_figures
from spica_core.stacking.outputs import StackOutputs


@dataclass(frozen=True)
class StackRecord:
    """What ``spica stack record`` wrote: the figures, the release and the step times."""

    figures: StackFigures
    release: str
    step_seconds: dict[str, float]
    recorded_at: str


def record_stack(engine: Engine, stack: str, workdir: Path, release: str) -> StackRecord:
    """Read the outputs of ``stack`` in ``workdir`` and record them (see the module's
    docstring). Raises NotFound for a stack dbspica does not hold (nothing written) and
    StackFailed for unusable outputs."""
    stack = validate_name(stack)
    release = validate_name(release, "release")
    with Session(engine) as session:
        if session.scalar(select(Stack.id).where(Stack.name == stack)) is None:
            raise NotFound("stack", stack)
    out = StackOutputs(workdir=Path(workdir), stack=stack)
    figures = stack_figures(out)
    now = utcnow()
    with Session(engine) as session, session.begin():
        row = session.scalars(select(Stack).where(Stack.name == stack).with_for_update()).one()
        seconds = step_seconds(session.scalars(select(StackRun).where(StackRun.stack_id == row.id)))
        result = session.scalars(
            select(StackResult).where(StackResult.stack_id == row.id)
        ).one_or_none()
        if result is None:
            result = StackResult(stack_id=row.id)
            session.add(result)
        for name, value in _columns(figures).items():
            setattr(result, name, value)
        result.step_seconds = seconds
        result.recorded_at = now
    record = StackRecord(
        figures=figures,
        release=release,
        step_seconds=seconds,
        recorded_at=now.isoformat(timespec="seconds"),
    )
    atomic_write(out.result, encode_record(record), mode=0o644)
    return record


def _columns(figures: StackFigures) -> dict[str, Any]:
    """The figures that are ``stack_result`` columns."""
    values = dataclasses.asdict(figures)
    values.pop("stack")
    return values


def encode_record(record: StackRecord) -> bytes:
    return (json.dumps(dataclasses.asdict(record), indent=2, sort_keys=True) + "\n").encode()


def step_of(command: str) -> str:
    """The step a line belongs to: its tool (``scamp``, ``swarp``…) or ``spica`` subcommand
    (``prepare``, ``inject``, ``record``)."""
    try:
        argv = shlex.split(command)
    except ValueError:
        argv = command.split()
    if not argv:
        return "?"
    tool = Path(argv[0]).name.lower()
    if tool == "spica":
        words = [a for a in argv[1:] if not a.startswith("-")]
        return words[1] if len(words) > 1 and words[0] == "stack" else " ".join(words[:1])
    return tool


def step_seconds(runs: Iterable[StackRun]) -> dict[str, float]:
    """Wall-clock seconds per step: the last finished attempt of each line, summed by step."""
    last: dict[int, StackRun] = {}
    for run in runs:
        if run.ended_at is None or run.exit_code != 0:
            continue
        if run.line not in last or run.attempt > last[run.line].attempt:
            last[run.line] = run
    seconds: dict[str, float] = {}
    for run in last.values():
        assert run.ended_at is not None
        step = step_of(run.command)
        spent = (run.ended_at - run.started_at).total_seconds()
        seconds[step] = round(seconds.get(step, 0.0) + max(spent, 0.0), 3)
    return seconds

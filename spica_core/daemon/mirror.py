"""The daemon's work mirrored into dbspica: one handler per event of :mod:`.events`.

Called by the replay (:mod:`spica_core.daemon.replay`) inside its transaction, entry after
entry. A state change goes through :mod:`spica_core.db.stack_state`: the node is the daemon's
truth, so dbspica takes the node's new state whatever it held — the transition itself when
dbspica had its source, a follow otherwise (an operator's dbspica half not yet written, a
stack queued by hand). A stack dbspica does not know is registered, pending, first: the
daemon ran it, so dbspica must hold its runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.apps.store import record_unit_versions
from spica_core.daemon import events as ev
from spica_core.db import stack_state
from spica_core.db.models import Node, Problem, Stack, StackRun
from spica_core.db.runs import end_dead_runs, wire_time
from spica_core.errors import SpicaError
from spica_core.states import Action, Actor, StackState


@dataclass(frozen=True)
class Envelope:
    """What the journal adds to each event: the node that wrote it and when."""

    node: str
    at: datetime


def apply(session: Session, entry: dict[str, Any]) -> None:
    """Apply one journal entry; ValueError (kept aside by the replay) for one it cannot read."""
    event = ev.from_entry(entry)
    handler: Callable[[Session, Envelope, Any], None] = _HANDLERS[type(event)]
    handler(session, Envelope(entry["node"], wire_time(entry["at"])), event)


def _stack(session: Session, env: Envelope, name: str) -> Stack:
    """The event's stack row, registered pending when dbspica does not know it."""
    known: dict[str, Stack] = session.info.setdefault("stacks", {})
    if name in known:
        return known[name]
    stack = session.scalars(select(Stack).where(Stack.name == name)).one_or_none()
    node_id = None
    if stack is None or stack.node_id is None:
        node_id = session.scalar(select(Node.id).where(Node.name == env.node))
    if stack is None:
        stack = stack_state.register(session, StackState.PENDING, name=name, node_id=node_id)
        session.flush()
    elif stack.node_id is None:
        stack.node_id = node_id
    known[name] = stack
    return stack


def _problem(session: Session, stack: Stack, env: Envelope, message: str) -> None:
    session.add(
        Problem(
            created_at=env.at,
            kind="software",
            node=env.node,
            stack=stack.name,
            runid=stack.runid,
            filter=stack.filter,
            release=stack.release,
            message=message,
        )
    )


def _move(
    session: Session,
    env: Envelope,
    name: str,
    source: StackState,
    target: StackState,
    action: Action,
    values: dict[str, Any],
) -> Stack:
    """The daemon's node transition ``source -> target`` into dbspica (see the module)."""
    stack = _stack(session, env, name)
    moved = stack_state.mirror(
        session,
        stack.name,
        source,
        target,
        Actor.DAEMON,
        action,
        stale=action is Action.RECOVER,
        values=values,
    )
    if not moved.applied:
        raise ValueError(f"stack {stack.name}: dbspica had {moved.had}, not moved to {target}")
    return stack


def _claimed(session: Session, env: Envelope, e: ev.Claimed) -> None:
    values = {
        "started_at": env.at,
        "finished_at": None,
        "lines": e.lines,
        "progress": e.progress,
        "failed_line": None,
        "exit_code": None,
        "error": None,
    }
    _move(session, env, e.stack, StackState.PENDING, StackState.RUNNING, Action.CLAIM, values)


def _run_row(
    session: Session, env: Envelope, e: ev.LineStarted | ev.LineEnded
) -> tuple[Stack, StackRun]:
    stack = _stack(session, env, e.stack)
    run = session.scalars(
        select(StackRun).where(
            StackRun.stack_id == stack.id,
            StackRun.line == e.line,
            StackRun.attempt == e.attempt,
        )
    ).one_or_none()
    if run is None:
        run = StackRun(
            stack_id=stack.id,
            line=e.line,
            attempt=e.attempt,
            command=getattr(e, "command", ""),
            node=env.node,
            started_at=env.at,
        )
        session.add(run)
    return stack, run


def _line_started(session: Session, env: Envelope, e: ev.LineStarted) -> None:
    _, run = _run_row(session, env, e)
    run.command = e.command
    run.started_at = env.at


def _line_ended(session: Session, env: Envelope, e: ev.LineEnded) -> None:
    stack, run = _run_row(session, env, e)
    run.ended_at = env.at
    run.exit_code = e.exit_code
    if e.progress is not None:
        stack.progress = e.progress


def _unit_versions(session: Session, env: Envelope, e: ev.UnitVersions) -> None:
    """The stack's ``stack_app`` rows; a version dbspica cannot keep becomes a problem row
    rather than stopping the journal."""
    stack = _stack(session, env, e.stack)
    session.flush()
    try:
        record_unit_versions(session, e.stack, e.versions)
    except SpicaError as exc:
        _problem(session, stack, env, f"{e.stack}: versions not recorded: {exc}")


def _completed(session: Session, env: Envelope, e: ev.Completed) -> None:
    values = {
        "finished_at": env.at,
        "progress": e.lines,
        "lines": e.lines,
        "failed_line": None,
        "exit_code": None,
        "error": None,
    }
    _move(session, env, e.stack, StackState.RUNNING, StackState.COMPLETED, Action.COMPLETE, values)


def _failed(session: Session, env: Envelope, e: ev.Failed | ev.Rejected) -> None:
    values: dict[str, Any] = {
        "finished_at": env.at,
        "failed_line": e.line,
        "exit_code": e.exit_code,
        "error": e.message,
    }
    if isinstance(e, ev.Rejected):
        source, action = StackState.PENDING, Action.REJECT
    else:
        source, action = StackState.RUNNING, Action.FAIL
        if e.progress is not None:
            values["progress"] = e.progress
    stack = _move(session, env, e.stack, source, StackState.FAILED, action, values)
    _problem(session, stack, env, e.message)


def _released(session: Session, env: Envelope, e: ev.Released) -> None:
    values = {"progress": e.progress}
    _move(session, env, e.stack, StackState.RUNNING, StackState.PENDING, Action.RECOVER, values)


def _recovered(session: Session, env: Envelope, e: ev.Recovered) -> None:
    target = StackState(e.state)
    values: dict[str, Any] = {}
    if target is StackState.FAILED:
        values = {
            "failed_line": e.line,
            "exit_code": None,
            "error": e.message,
            "finished_at": env.at,
        }
    stack = _move(session, env, e.stack, StackState.RUNNING, target, Action.RECOVER, values)
    if e.attempt is not None:
        session.flush()  # the rows of this batch's line_started entries, if any
        end_dead_runs(session, stack.id, e.attempt, e.run_line, e.run_exit_code, env.at)
    _problem(session, stack, env, e.message)


def _check_failed(session: Session, env: Envelope, e: ev.CheckFailed) -> None:
    stack = _stack(session, env, e.stack)
    stack.error = f"check: {e.reason}"
    if e.problem:
        _problem(session, stack, env, f"check failed, stack waits: {e.reason}")


def _node_problem(session: Session, env: Envelope, e: ev.NodeProblem) -> None:
    session.add(
        Problem(created_at=env.at, kind="software", node=env.node, stack=e.stack, message=e.message)
    )


_HANDLERS: dict[type, Callable[[Session, Envelope, Any], None]] = {
    ev.Claimed: _claimed,
    ev.LineStarted: _line_started,
    ev.LineEnded: _line_ended,
    ev.UnitVersions: _unit_versions,
    ev.Completed: _completed,
    ev.Failed: _failed,
    ev.Rejected: _failed,
    ev.Released: _released,
    ev.Recovered: _recovered,
    ev.CheckFailed: _check_failed,
    ev.NodeProblem: _node_problem,
}
assert set(_HANDLERS) == set(ev.EVENT_TYPES), "every mirror event has its handler"

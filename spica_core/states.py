"""The stack state machine (DESIGN §3): the one owner of states and transitions.

On a node the state of a stack is the suffix of its queue file and every transition is one
atomic ``rename(2)``; dbspica mirrors it. Every piece of SPICA that moves a stack — the
daemon, the operations, reconcile — asks this module first, so an illegal move is refused
the same way everywhere, with the stack, its state and the allowed moves named.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from spica_core.errors import StackStateError


class StackState(StrEnum):
    PLANNED = "planned"  # generated, in dbspica, no queue file on the node yet
    PENDING = "pending"  # <stack>.spica: waiting for the daemon
    RUNNING = "running"  # <stack>.processing: claimed by a daemon
    COMPLETED = "completed"  # <stack>.processed
    FAILED = "failed"  # <stack>.error: holds the failed line and message
    REMOVED = "removed"  # rows and outputs deleted; terminal


class Actor(StrEnum):
    OPERATOR = "operator"
    DAEMON = "daemon"


class Action(StrEnum):
    LAUNCH = "launch"
    CLAIM = "claim"
    COMPLETE = "complete"
    FAIL = "fail"
    REJECT = "reject"
    RECOVER = "recover"
    REQUEUE = "requeue"
    UNLOCK = "unlock"
    REMOVE = "remove"


#: Queue-file suffix of each state that has a file on the node.
SUFFIX: dict[StackState, str] = {
    StackState.PENDING: "spica",
    StackState.RUNNING: "processing",
    StackState.COMPLETED: "processed",
    StackState.FAILED: "error",
}
STATE_OF_SUFFIX: dict[str, StackState] = {v: k for k, v in SUFFIX.items()}


@dataclass(frozen=True)
class Transition:
    source: StackState
    target: StackState
    actor: Actor
    action: Action
    #: Only allowed when the running stack's daemon/pid is dead or its node rebooted.
    needs_stale: bool = False
    note: str = ""


S, A, Ac = StackState, Actor, Action

TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.PLANNED, S.PENDING, A.OPERATOR, Ac.LAUNCH, note="writes <stack>.spica"),
    Transition(S.PENDING, S.RUNNING, A.DAEMON, Ac.CLAIM, note="after spica check passes"),
    Transition(S.PENDING, S.FAILED, A.DAEMON, Ac.REJECT, note="stack files cannot run"),
    Transition(S.RUNNING, S.COMPLETED, A.DAEMON, Ac.COMPLETE),
    Transition(S.RUNNING, S.FAILED, A.DAEMON, Ac.FAIL, note="records line, exit code"),
    Transition(S.RUNNING, S.PENDING, A.DAEMON, Ac.RECOVER, True, "stale claim, resumable"),
    Transition(S.RUNNING, S.FAILED, A.DAEMON, Ac.RECOVER, True, "stale claim, as failed"),
    Transition(S.FAILED, S.PENDING, A.OPERATOR, Ac.REQUEUE, note="resumes at failed line"),
    Transition(S.RUNNING, S.FAILED, A.OPERATOR, Ac.UNLOCK, True),
    Transition(S.RUNNING, S.PENDING, A.OPERATOR, Ac.UNLOCK, True, "unlock --requeue"),
    *(
        Transition(s, S.REMOVED, A.OPERATOR, Ac.REMOVE)
        for s in (S.PLANNED, S.PENDING, S.COMPLETED, S.FAILED)
    ),
)
del S, A, Ac


def _by_move() -> dict[tuple[StackState, StackState, Actor], tuple[Transition, ...]]:
    table: dict[tuple[StackState, StackState, Actor], tuple[Transition, ...]] = {}
    for t in TRANSITIONS:
        key = (t.source, t.target, t.actor)
        table[key] = (*table.get(key, ()), t)
    return table


#: TRANSITIONS by (source, target, actor), in their order.
_BY_MOVE = _by_move()


def allowed_from(state: StackState, actor: Actor | None = None) -> list[Transition]:
    """The moves that exist from ``state`` (for ``actor`` only, when given)."""
    return [t for t in TRANSITIONS if t.source == state and (actor is None or t.actor == actor)]


def describe(t: Transition) -> str:
    extra = " (stale only)" if t.needs_stale else ""
    return f"{t.action} -> {t.target}{extra}"


def check_transition(
    stack: str,
    source: StackState | str,
    target: StackState | str,
    actor: Actor | str,
    action: Action | str | None = None,
    *,
    stale: bool = False,
) -> Transition:
    """Return the transition ``source -> target`` by ``actor``, or raise ``StackStateError``.

    ``stale`` says the caller has established that a running stack's daemon or pid is dead
    (or its node rebooted); moves marked ``needs_stale`` are refused without it.
    """
    source, target, actor = StackState(source), StackState(target), Actor(actor)
    action = Action(action) if action is not None else None
    candidates = [
        t for t in _BY_MOVE.get((source, target, actor), ()) if action is None or t.action == action
    ]
    for t in candidates:
        if stale or not t.needs_stale:
            return t
    # Refused: only now the message (a bulk plan checks every stack, nearly all allowed).
    wanted = f"{action} (as {actor})" if action else f"move to {target} (as {actor})"
    options = [describe(t) for t in allowed_from(source, actor)]
    if not candidates:
        raise StackStateError(stack, source.value, wanted, options)
    raise StackStateError(
        stack,
        source.value,
        f"{wanted}: its daemon is alive (only a stale running stack may be unlocked)",
        options,
    )


#: The states dbspica can follow a node into: every state a node shows (``planned``: no queue
#: file). ``removed`` is never followed into: its row goes only with an operator's remove.
FOLLOWABLE = frozenset(StackState) - {StackState.REMOVED}


def check_follow(stack: str, source: StackState | str | None, target: StackState | str) -> None:
    """Allow dbspica's ``source -> target`` when it follows the node, or raise ``StackStateError``.

    The node's queue file is the execution truth: where dbspica disagrees (an apply
    interrupted before its dbspica half, a daemon write replayed after an operator's, a
    dbspica restored from a backup, a stack queued by hand), dbspica takes the node's state
    whatever it held. This is the one move outside :data:`TRANSITIONS`; it never touches a
    node. ``source`` None: dbspica has no row yet (the row is registered in ``target``).
    """
    target = StackState(target)
    if source is not None and StackState(source) is StackState.REMOVED:
        raise StackStateError(stack, "removed", f"follow its node to {target}", [])
    if target not in FOLLOWABLE:
        shown = "absent from dbspica" if source is None else str(StackState(source))
        raise StackStateError(
            stack,
            shown,
            f"follow its node to {target} (only an operator's remove removes a stack)",
            [f"follow -> {s}" for s in sorted(FOLLOWABLE)],
        )


def queue_file_name(stack: str, state: StackState) -> str:
    """``<stack>.<suffix>``; only states with a queue file have one."""
    try:
        return f"{stack}.{SUFFIX[state]}"
    except KeyError:
        raise ValueError(f"state {state} has no queue file") from None


def parse_queue_file_name(filename: str) -> tuple[str, StackState] | None:
    """Split a queue file name into (stack, state); None for anything else in ``queue/``."""
    stack, dot, suffix = filename.rpartition(".")
    if not dot or not stack or suffix not in STATE_OF_SUFFIX:
        return None
    return stack, STATE_OF_SUFFIX[suffix]

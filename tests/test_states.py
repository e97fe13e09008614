"""The stack state machine, checked against DESIGN §3 for every pair of states."""

from __future__ import annotations

import itertools

import pytest

from spica_core.errors import StackStateError
from spica_core.states import (
    TRANSITIONS,
    Actor,
    StackState,
    check_transition,
    parse_queue_file_name,
    queue_file_name,
)

P, Q, R, C, F, X = (
    StackState.PLANNED,
    StackState.PENDING,
    StackState.RUNNING,
    StackState.COMPLETED,
    StackState.FAILED,
    StackState.REMOVED,
)
OP, D = Actor.OPERATOR, Actor.DAEMON

# (source, target, actor) -> needs a stale (dead) claim. Written out by hand from DESIGN §3,
# independently of spica_core.states.
EXPECTED: dict[tuple[StackState, StackState, Actor], bool] = {
    (P, Q, OP): False,  # launch
    (Q, R, D): False,  # claim
    (Q, F, D): False,  # reject a stack that cannot run
    (R, C, D): False,  # complete
    (R, F, D): False,  # fail (a line exited non-zero)
    (R, Q, D): True,  # recover a crashed claim as pending
    (F, Q, OP): False,  # requeue
    (R, F, OP): True,  # unlock
    (R, Q, OP): True,  # unlock --requeue
    (P, X, OP): False,  # remove
    (Q, X, OP): False,
    (C, X, OP): False,
    (F, X, OP): False,
}


@pytest.mark.parametrize(
    ("source", "target", "actor"),
    list(itertools.product(StackState, StackState, Actor)),
    ids=lambda v: str(v),
)
def test_every_pair(source: StackState, target: StackState, actor: Actor) -> None:
    key = (source, target, actor)
    if key not in EXPECTED:
        with pytest.raises(StackStateError) as info:
            check_transition("CFHTLS_W_u_021410-041200_T0003", source, target, actor)
        message = str(info.value)
        assert "CFHTLS_W_u_021410-041200_T0003" in message
        assert f"is {source}" in message
        assert "allowed from" in message
        return
    needs_stale = EXPECTED[key]
    if needs_stale:
        with pytest.raises(StackStateError, match="daemon is alive"):
            check_transition("s1", source, target, actor)
        assert check_transition("s1", source, target, actor, stale=True).target == target
    else:
        t = check_transition("s1", source, target, actor)
        assert (t.source, t.target, t.actor) == key


def test_table_has_nothing_more() -> None:
    assert {(t.source, t.target, t.actor) for t in TRANSITIONS} == set(EXPECTED)


def test_running_stack_cannot_be_removed_and_says_what_is_allowed() -> None:
    with pytest.raises(StackStateError) as info:
        check_transition("mystack", "running", "removed", "operator", "remove")
    assert info.value.stack == "mystack"
    assert info.value.state == "running"
    assert any("unlock" in move for move in info.value.allowed)


def test_removed_is_terminal() -> None:
    for target, actor in itertools.product(StackState, Actor):
        with pytest.raises(StackStateError):
            check_transition("s", X, target, actor)


def test_action_must_match() -> None:
    with pytest.raises(StackStateError):
        check_transition("s", F, Q, OP, "launch")
    assert check_transition("s", F, Q, OP, "requeue").action == "requeue"


@pytest.mark.parametrize("state", [Q, R, C, F])
def test_queue_file_names_round_trip(state: StackState) -> None:
    name = "805282p_V0003"
    assert parse_queue_file_name(queue_file_name(name, state)) == (name, state)


def test_queue_file_name_rejects_others() -> None:
    assert parse_queue_file_name("x.tmp") is None
    assert parse_queue_file_name(".spica") is None
    assert parse_queue_file_name("noext") is None
    with pytest.raises(ValueError):
        queue_file_name("x", P)

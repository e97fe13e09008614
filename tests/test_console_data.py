"""spica_core.console_data and the read model under it, on SQLite and MariaDB: stack
windows, filters, counts, the runid distribution, the db state of a poll, per-line status."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from spica_core.console_data import ConsoleSnapshot, command_lines, read_db_state
from spica_core.db.models import Node, Stack
from spica_core.errors import UsageError
from spica_core.read_model import (
    StackSelection,
    count_stacks,
    page_stacks,
    runid_distribution,
    stack_detail,
    state_counts,
)
from spica_core.states import StackState
from tests.console_world import FAILED, NOW, cluster, populate

STATES = ("completed", "failed", "pending", "running", "planned")


def many(engine, n: int = 500) -> None:
    """n stacks over 4 nodes, states and priorities in a fixed pattern."""
    with engine.begin() as conn:
        conn.execute(
            insert(Node),
            [{"name": f"node{i}", "host": "h", "root": "/r", "port": 22} for i in range(1, 5)],
        )
        ids = dict(conn.execute(select(Node.name, Node.id)).all())
        conn.execute(
            insert(Stack),
            [
                {
                    "name": f"CFHTLS_W_{'ugriz'[i % 5]}_{i:05d}_T0003",
                    "state": STATES[i % 5],
                    "priority": i % 7,
                    "node_id": ids[f"node{1 + i % 4}"],
                    "runid": f"03AL{i % 3:02d}",
                    "filter": "ugriz"[i % 5],
                    "error": "Failed on spica_copy.pl - Code 2" if i % 5 == 1 else None,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for i in range(n)
            ],
        )


def names(page) -> list[str]:
    return [r.name for r in page.rows]


def test_pages_cover_the_view_in_order(db_engine) -> None:
    many(db_engine)
    query = StackSelection()
    seen: list[str] = []
    for offset in range(0, 520, 60):
        seen += names(page_stacks(db_engine, query, offset, 60))
    assert seen == sorted(seen) and len(seen) == 500 == len(set(seen))
    assert count_stacks(db_engine, query) == 500
    failed = StackSelection(StackState.FAILED)
    rows = page_stacks(db_engine, failed, 0, 1000, with_total=True)
    assert rows.total == 100 == len(rows.rows)
    assert all(r.state == "failed" for r in rows.rows)
    keys = [(-r.priority, r.name) for r in rows.rows]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)  # priority first, highest on top


def test_plain_filter_is_a_case_insensitive_substring_over_five_columns(db_engine) -> None:
    many(db_engine)
    assert count_stacks(db_engine, StackSelection(text="w_u_0000")) == 2  # 00000, 00005
    assert count_stacks(db_engine, StackSelection(text="NODE3")) == 125  # the node name
    assert count_stacks(db_engine, StackSelection(text="03al02")) == 166  # the runid
    assert count_stacks(db_engine, StackSelection(text="spica_copy")) == 100  # the error
    # LIKE wildcards are literal: "_" is not "any character", "%" is not "anything".
    assert count_stacks(db_engine, StackSelection(text="W_u%")) == 0
    assert count_stacks(db_engine, StackSelection(text="W_u_")) == 100
    page = page_stacks(
        db_engine, StackSelection(StackState.FAILED, "node2"), 0, 10, with_total=True
    )
    assert page.total == 25 and all(r.node == "node2" for r in page.rows)


def test_regex_filter_streams_and_counts(db_engine) -> None:
    many(db_engine)
    query = StackSelection(text=r"_[ug]_000[0-4]\d_")
    assert query.is_regex
    rows = names(page_stacks(db_engine, query, 0, 1000))
    assert rows == sorted(rows) and len(rows) == count_stacks(db_engine, query) == 20
    assert names(page_stacks(db_engine, query, 5, 5)) == rows[5:10]
    counts = state_counts(db_engine, query)
    assert sum(counts.values()) == 20 and counts["completed"] == 10
    with pytest.raises(UsageError, match="not a valid regular expression"):
        StackSelection(text="([")


def test_state_counts_and_marks_hidden_by_the_filter(db_engine) -> None:
    many(db_engine)
    assert state_counts(db_engine, StackSelection()) == {
        s: 100 for s in ("planned", "pending", "running", "completed", "failed")
    }
    assert state_counts(db_engine, StackSelection(text="node1"))["completed"] == 25
    marked = frozenset({"CFHTLS_W_u_00000_T0003", "CFHTLS_W_g_00001_T0003"})
    view = StackSelection(StackState.FAILED, "", marked)
    assert count_stacks(db_engine, view) == 1  # 00001 is failed; 00000 is hidden


def test_runid_distribution_as_on_the_seed(db_engine) -> None:
    populate(db_engine)
    dist = runid_distribution(db_engine)
    assert dist.runids == ("03AL01", "03AL02", "03AQ97", "04BL06")
    assert dist.nodes == ("mix1", "mix2", "mix3", "mix4", "pix1", "pix2")
    assert dist.cell("04BL06", "mix1") == "100.0% [2 files]"
    assert dist.cell("03AL01", "mix3") == "56.1% [23 files]"
    assert dist.cell("03AL01", "mix2") == "-"
    # Two 03AL02 images wait for DataTransfer: the row adds up to less than 100 %.
    assert dist.cell("03AL02", "mix3") == "33.3% [4 files]"
    assert dist.to_json()[0]["nodes"]["mix1"] == {"files": 7, "percent": 17.1}


def test_db_state_and_console_snapshot(db_engine) -> None:
    populate(db_engine)
    state = read_db_state(db_engine)
    assert state.counts == {"planned": 2, "pending": 3, "running": 3, "completed": 9, "failed": 2}
    assert [p["message"] for p in state.problems][:2] == [
        "Unable to contact mix4 via ssh",
        state.problems[1]["message"],
    ]
    assert state.problems[0]["created_at"] > state.problems[1]["created_at"]
    snap = ConsoleSnapshot("terapix", "sqlite:///x", NOW, cluster(), state)
    assert not snap.db_stale
    assert not snap.reachable("mix4") and snap.reachable("mix1") and snap.reachable("nowhere")
    assert snap.oldest_data() == NOW - timedelta(minutes=2)  # mix4's last good answer
    stale = ConsoleSnapshot("terapix", "x", NOW, cluster(), state, "(2003) gone", NOW)
    assert stale.db_stale


def test_command_lines_status(db_engine) -> None:
    populate(db_engine)
    lines = command_lines(stack_detail(db_engine, FAILED))
    assert [(c.number, c.status) for c in lines[:4]] == [
        (1, "done"),
        (2, "done"),
        (3, "failed"),
        (4, "not run"),
    ]
    assert len(lines) == 12 and lines[2].exit_code == 2 and lines[2].command
    with Session(db_engine) as s, s.begin():
        running = s.scalars(select(Stack).where(Stack.state == "running")).first()
        running.progress, running.lines = 4, 6
        name = running.name
    statuses = [c.status for c in command_lines(stack_detail(db_engine, name))]
    assert statuses == ["done"] * 4 + ["running", "not run"]

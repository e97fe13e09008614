"""The QFin page's read model on SQLite and MariaDB: per-runid figures, breakdowns and the
units running equal what the seeded rows say (counted here from the seed, not by SQL), a
fixed number of statements whatever the number of images, and a runid scope that sees only
its runids and nothing about nodes."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from spica_core.db.models import Node
from spica_core.read_model import Scope
from spica_core.read_model.qfin import (
    NONE_LABEL,
    NOT_GRADED,
    breakdowns,
    qfin_units,
    qfin_view,
    runid_figures,
    running_units,
)
from tests.qfin_world import RUNIDS, SeedImage, images, seed

NODES = ("mix1", "mix2", "pix1")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def seeded(db_engine) -> list[SeedImage]:
    with Session(db_engine) as s, s.begin():
        for name in NODES:
            s.add(Node(name=name, host="127.0.0.1", root=f"/data/{name}"))
    made = images(NODES)
    seed(db_engine, made)
    return made


def expected(seeded: list[SeedImage], runid: str) -> dict[str, int]:
    mine = [i for i in seeded if i.runid == runid]
    return {
        "runid": runid,  # type: ignore[dict-item]
        "received": len(mine),
        "placed": sum(1 for i in mine if i.node is not None),
        "waiting": sum(1 for i in mine if i.node is None),
        "problems": sum(1 for i in mine if i.qf_status == "failed" or i.open_problem),
        "done": sum(1 for i in mine if i.qf_status == "done"),
        "running": sum(1 for i in mine if i.unit_state == "running"),
        "queued": sum(1 for i in mine if i.unit_state in ("planned", "pending")),
    }


def expected_breakdowns(seeded: list[SeedImage], runid: str | None) -> dict[str, Counter[str]]:
    mine = [i for i in seeded if runid is None or i.runid == runid]
    return {
        "filter": Counter(i.filter for i in mine),
        "node": Counter(i.node or NONE_LABEL for i in mine),
        "grade": Counter(i.grade or NOT_GRADED for i in mine),
        "object": Counter(i.object for i in mine),
        "exptime": Counter(f"{i.exptime:g}" for i in mine),
        "night": Counter(i.date_obs.date().isoformat() for i in mine),
    }


def test_figures_per_runid_are_the_seeded_rows(db_engine, seeded) -> None:
    figures = [f.to_json() for f in runid_figures(db_engine)]
    assert figures == [expected(seeded, r) for r in sorted(RUNIDS)]
    # every state is present, so no figure is trivially zero
    assert all(f[k] > 0 for f in figures for k in ("waiting", "problems", "done", "running"))


@pytest.mark.parametrize("runid", [None, "04BF29"])
def test_breakdowns_are_the_seeded_rows(db_engine, seeded, runid: str | None) -> None:
    got = breakdowns(db_engine, runid)
    want = expected_breakdowns(seeded, runid)
    assert {k: Counter(v) for k, v in got.counts.items()} == want
    grades = list(got.of("grade"))
    assert grades[0] == NOT_GRADED and grades[1:] == sorted(grades[1:])  # the seed's order
    assert list(got.of("exptime")) == ["60", "600"]


def test_units_running_with_node_and_partition(db_engine, seeded) -> None:
    rows = running_units(db_engine)
    want = sorted(
        ((i.unit, i.name, i.runid, i.filter, i.object, i.node, i.partition)
         for i in seeded if i.unit_state == "running"),
        key=lambda t: (next(s.date_obs for s in seeded if s.name == t[1]), t[0]),
    )  # fmt: skip
    assert [(r.unit, r.image, r.runid, r.filter, r.object, r.node, r.partition) for r in rows] == (
        want
    )
    assert len(rows) >= 3


def test_units_of_images(db_engine, seeded) -> None:
    names = [i.name for i in seeded[:12]]
    assert qfin_units(db_engine, names) == {i.name: i.unit for i in seeded[:12] if i.unit}
    assert qfin_units(db_engine, []) == {}


def test_one_statement_per_figure_group(db_engine, seeded) -> None:
    """No N+1: the view is three statements, with 40 images or with 80."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append(statement)

    event.listen(db_engine, "before_cursor_execute", count)
    try:
        view = qfin_view(db_engine, NOW, "04BF28")
        first = len(statements)
        more = [
            SeedImage(**{**i.__dict__, "name": i.name.replace("p", "q")}) for i in seeded
        ]  # the same images again under other names (and units)
        seed(db_engine, more)
        statements.clear()
        again = qfin_view(db_engine, NOW, "04BF28")
    finally:
        event.remove(db_engine, "before_cursor_execute", count)
    assert first == len(statements) == 3
    assert again.runid("04BF28").received == 2 * view.runid("04BF28").received  # type: ignore[union-attr]


def test_a_runid_scope_sees_its_runids_and_no_nodes(db_engine, seeded) -> None:
    scope = Scope.of_runids({"04BF28"})
    view = qfin_view(db_engine, NOW, None, scope)
    assert [r.to_json() for r in view.runids] == [expected(seeded, "04BF28")]
    want = expected_breakdowns(seeded, "04BF28")
    want["node"] = Counter()
    assert {k: Counter(v) for k, v in view.breakdowns.counts.items()} == want
    assert view.running and {r.runid for r in view.running} == {"04BF28"}
    assert all(r.node is None and r.partition is None for r in view.running)
    text = json.dumps(view.to_json())
    assert not [n for n in NODES if n in text] and "raid" not in text
    # another runid asked for by name: nothing
    assert breakdowns(db_engine, "04BF29", scope).counts["filter"] == {}
    assert running_units(db_engine, scope, "04BF29") == []
    others = [i.name for i in seeded if i.runid != "04BF28" and i.unit]
    assert qfin_units(db_engine, others, scope) == {}
    assert qfin_view(db_engine, NOW, None, Scope.of_runids(())).runids == ()

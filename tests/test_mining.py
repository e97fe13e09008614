"""Data mining: the seeing histogram per filter, completeness against seeing, wall time per
step and node, each summed in SQL on both engines and within a scope."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from spica_core.db.models import Runid, Stack, StackResult, StackRun
from spica_core.read_model import Scope
from spica_core.read_model.mining import (
    OTHER_STEP,
    SEEING_BIN,
    completeness_points,
    mining_view,
    seeing_distribution,
    step_times,
)
from tests.results_support import add_images, add_runs

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

#: (runid, filter, seeing, qf_status)
IMAGES = [
    ("03BL01", "u", 0.93, "done"),
    ("03BL01", "u", 0.97, "done"),
    ("03BL01", "u", 1.21, "done"),
    ("03BL01", "r", 0.71, "done"),
    ("04AL02", "r", 0.75, "done"),
    ("04AL02", "r", 0.7, "done"),
    ("04AL02", "r", 2.0, "failed"),  # not measured by QFin: left out
    ("04AL02", "r", None, "done"),
]

#: (stack, runid, node, [(argv, seconds)])
RUNS = [
    (
        "TILE_A_T0003",
        "03BL01",
        "mix1",
        [
            (["spica", "stack", "prepare", "TILE_A_T0003", "--image", "805282p"], 1.5),
            (["source-extractor", "inputs/805282p.fits", "-c", "stack.sex"], 4.0),
            (["source-extractor", "inputs/805283p.fits", "-c", "stack.sex"], 6.0),
            (["scamp", "@scamp.list", "-c", "stack.scamp"], 12.25),
            (["SWarp", "@swarp.list", "-c", "stack.swarp"], 30.0),
            (["/usr/bin/psfex", "TILE_A_T0003.cat"], 2.0),
            (["stiff", "TILE_A_T0003.fits"], 0.5),
            (["spica", "stack", "record", "TILE_A_T0003"], 0.75),
        ],
    ),
    (
        "TILE_B_T0003",
        "04AL02",
        "mix2",
        [
            (["spica", "stack", "inject", "TILE_B_T0003"], 3.0),
            (["scamp", "@scamp.list"], 8.0),
            (["echo", "scamp"], 0.25),
        ],
    ),
]


@pytest.fixture
def mined(db_engine):
    with Session(db_engine) as s, s.begin():
        runids = {name: Runid(name=name) for name in ("03BL01", "04AL02")}
        s.add_all(runids.values())
        s.flush()
        add_images(s, [(runids[runid].id, flt, seeing, qf) for runid, flt, seeing, qf in IMAGES])
        for k, (name, runid, node, lines) in enumerate(RUNS):
            stack = Stack(name=name, release="T0003", runid=runid, filter="u", state="completed")
            s.add(stack)
            s.flush()
            s.add(StackResult(stack_id=stack.id, seeing=0.8 + 0.1 * k, completeness=25.0 - k))
            start = add_runs(s, stack.id, node, lines, T0)
            # A line still running: not counted.
            s.add(
                StackRun(stack_id=stack.id, line=99, command="scamp x", node=node, started_at=start)
            )
        planned = Stack(name="TILE_C_T0003", release="T0003", runid="03BL01", state="planned")
        s.add(planned)
    return db_engine


def test_seeing_histogram_per_filter(mined) -> None:
    with Session(mined) as s:
        bins = seeing_distribution(s)
    got = {(b.filter, round(b.low, 2)): b.images for b in bins}
    assert got == {("r", 0.7): 3, ("u", 0.9): 2, ("u", 1.2): 1}
    assert all(b.low == pytest.approx(round(b.low / SEEING_BIN) * SEEING_BIN) for b in bins)
    with Session(mined) as s:
        scoped = seeing_distribution(s, Scope.of_runids({"03BL01"}))
    assert {(b.filter, round(b.low, 2)): b.images for b in scoped} == {
        ("r", 0.7): 1,
        ("u", 0.9): 2,
        ("u", 1.2): 1,
    }


def test_completeness_points(mined) -> None:
    with Session(mined) as s:
        points = completeness_points(s)
        scoped = completeness_points(s, Scope.of_runids({"04AL02"}))
    assert sorted((p.stack, p.seeing, p.completeness) for p in points) == [
        ("TILE_A_T0003", pytest.approx(0.8), 25.0),
        ("TILE_B_T0003", pytest.approx(0.9), 24.0),
    ]
    assert [p.stack for p in scoped] == ["TILE_B_T0003"]


def test_time_per_step_and_node(mined) -> None:
    with Session(mined) as s:
        steps = step_times(s)
    got = {(t.step, t.node): (t.runs, round(t.seconds, 3)) for t in steps}
    assert got == {
        ("prepare", "mix1"): (1, 1.5),
        ("source-extractor", "mix1"): (2, 10.0),
        ("scamp", "mix1"): (1, 12.25),
        ("swarp", "mix1"): (1, 30.0),
        ("psfex", "mix1"): (1, 2.0),
        ("stiff", "mix1"): (1, 0.5),
        ("record", "mix1"): (1, 0.75),
        ("inject", "mix2"): (1, 3.0),
        ("scamp", "mix2"): (1, 8.0),
        (OTHER_STEP, "mix2"): (1, 0.25),
    }


def test_time_per_step_in_a_scope_has_no_node(mined) -> None:
    with Session(mined) as s:
        steps = step_times(s, Scope.of_runids({"04AL02"}))
    got = {(t.step, t.node): (t.runs, round(t.seconds, 3)) for t in steps}
    assert got == {
        ("inject", None): (1, 3.0),
        ("scamp", None): (1, 8.0),
        (OTHER_STEP, None): (1, 0.25),
    }


def test_mining_view_json(mined) -> None:
    data = mining_view(mined).to_json()
    assert set(data) == {"seeing_bin", "seeing", "completeness", "steps"}
    assert set(data["steps"][0]) == {"step", "node", "runs", "seconds"}
    assert set(data["seeing"][0]) == {"filter", "low", "images"}
    assert set(data["completeness"][0]) == {"stack", "filter", "seeing", "completeness"}

"""``spica auto`` at the command line (a subprocess) on two demo nodes: ``--dry-run``
writes nothing anywhere, ``--launch`` queues, running again plans nothing, a changed
input set exits 1, a frozen release whose rules changed exits 2, usage errors exit 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Stack, StackRelease
from spica_core.demo.cluster import DemoCluster
from tests.auto_support import RELEASE, A, B, auto_demo, edit_config, put
from tests.conftest import invoke_spica

T1 = f"CFHTLS_W_r_004000-010000_{RELEASE}"
T2 = f"CFHTLS_W_r_004200-010000_{RELEASE}"


@pytest.fixture
def demo(tmp_path: Path, db_url: str) -> Iterator[DemoCluster]:
    yield from auto_demo(tmp_path, db_url)


def auto(demo: DemoCluster, *args: str) -> Any:
    return invoke_spica("--config", str(demo.config_path), "auto", *args)


def node_files(demo: DemoCluster) -> set[Path]:
    return {
        p for node in (A, B) for p in demo.node_root(node).rglob("*")
        if p.is_file() and ("stacks" in p.parts or "inputs" in p.parts)
    }  # fmt: skip


def counts(demo: DemoCluster) -> tuple[int, int]:
    engine = make_engine(load_config(demo.config_path).db)
    try:
        with Session(engine) as s:
            return (
                int(s.scalar(select(func.count(Stack.id))) or 0),
                int(s.scalar(select(func.count(StackRelease.id))) or 0),
            )
    finally:
        engine.dispose()


def test_dry_run_launch_again_changed_and_frozen(demo: DemoCluster) -> None:
    config = load_config(demo.config_path)
    engine = make_engine(config.db)
    try:
        put(demo, config, engine, "a1", A, 20_000, ra=10.0)
        put(demo, config, engine, "a2", B, 90_000, ra=10.1)
        put(demo, config, engine, "b1", A, 3_000, ra=10.5)
        put(demo, config, engine, "c1", A, 3_000, ra=10.5, grade="C")
    finally:
        engine.dispose()
    before = node_files(demo)

    dry = auto(demo, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True and planned["release"] == RELEASE
    assert [u["stack"] for u in planned["units"]] == [T1, T2]
    assert planned["units"][0]["node"] == B and planned["units"][0]["scamp"] == ["a1", "a2"]
    assert planned["refused"] == [{"image": "c1", "reason": "grade C (the release takes A, B)"}]
    assert counts(demo) == (0, 0) and node_files(demo) == before  # nothing written anywhere

    table = auto(demo, "--dry-run")
    assert table.returncode == 0, table.stderr
    assert T1 in table.stdout and "would plan" in table.stdout
    assert "c1: refused: grade C" in table.stderr

    launched = auto(demo, "--launch", "--json")
    assert launched.returncode == 0, launched.stderr
    states = {u["stack"]: u["state"] for u in json.loads(launched.stdout)["units"]}
    assert states == {T1: "pending", T2: "pending"}
    assert (demo.node_root(B) / "queue" / f"{T1}.spica").exists()
    assert counts(demo) == (2, 1)

    again = auto(demo, "--json")
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["units"] == [] and {e["stack"] for e in out["existing"]} == {T1, T2}

    engine = make_engine(config.db)
    try:
        put(demo, config, engine, "b2", A, 3_000, ra=10.55)
    finally:
        engine.dispose()
    changed = auto(demo)
    assert changed.returncode == 1
    assert f"{T2} (pending): inputs added: scamp:b2, swarp:b2" in changed.stderr
    assert counts(demo) == (2, 1)

    edit_config(demo.config_path,
                lambda st: st["releases"][0]["rules"].update(min_exptime=100.0))  # fmt: skip
    frozen = auto(demo, "--dry-run")
    assert frozen.returncode == 2
    assert f"release {RELEASE} is frozen" in frozen.stderr and "rules.min_exptime" in frozen.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_usage_errors(demo: DemoCluster) -> None:
    both = auto(demo, "--dry-run", "--launch")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    mode = auto(demo, "--mode", "tile")
    assert mode.returncode == 2 and "--mode tile: stack or image" in mode.stderr
    release = auto(demo, "--release", "T0042")
    assert release.returncode == 2 and "no release named 'T0042'" in release.stderr
    survey = auto(demo, "--survey", "D", "--dry-run")
    assert survey.returncode == 2 and "--survey D" in survey.stderr

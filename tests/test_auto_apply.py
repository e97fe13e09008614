"""``spica auto`` writing its plan on two demo nodes (SQLite and MariaDB): an input copied
from the other node over SSH with its checksum verified, the reference catalogue as
FITS_LDAC on the unit's node, the stack and ``stack_file`` rows, the release frozen; run
again nothing is new, a changed input set is reported and the unit untouched, a changed
release refused; a copy whose source is not what was ingested adds no unit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.auto.apply import apply_auto
from spica_core.auto.freeze import ReleaseFrozen
from spica_core.auto.plan import AutoQuery, plan_auto
from spica_core.checksum import file_checksum
from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Image, Stack, StackFile, StackRelease
from spica_core.demo.cluster import DemoCluster
from tests.auto_support import RELEASE, A, B, auto_demo, edit_config, put
from tests.conftest import run_spica

T1 = f"CFHTLS_W_r_004000-010000_{RELEASE}"


@pytest.fixture
def demo(tmp_path: Path, db_url: str) -> Iterator[DemoCluster]:
    yield from auto_demo(tmp_path, db_url)


def test_apply_copies_adds_freezes_and_is_idempotent(demo: DemoCluster) -> None:
    config = load_config(demo.config_path)
    engine = make_engine(config.db)
    try:
        far = put(demo, config, engine, "a1", A, 20_000, ra=10.0)
        put(demo, config, engine, "a2", B, 90_000, ra=10.1)
        plan = plan_auto(engine, config, AutoQuery())
        [unit] = plan.units
        assert unit.name == T1 and unit.node == B and [c.image for c in unit.copies] == ["a1"]
        done = apply_auto(engine, config, plan, over_ssh=True)
        [added] = done.units
        assert (added.state, added.error) == ("planned", None), added.error
        # The input copied from A is on B with A's bytes; the reference catalogue as LDAC.
        copied = Path(unit.copies[0].path)
        assert copied.is_file() and file_checksum(copied) == file_checksum(far)
        with fits.open(unit.unit.reference_catalogue) as hdus:
            assert len(hdus["LDAC_OBJECTS"].data) == 3
        commands = demo.node_root(B) / "stacks" / T1 / "commands.sh"
        assert commands.read_text().splitlines() == list(unit.commands)
        with Session(engine) as s:
            stack = s.scalars(select(Stack).where(Stack.name == T1)).one()
            assert (stack.step, stack.state, stack.release, stack.survey, stack.filter) == (
                "stack", "planned", RELEASE, "W", "r.MP9601"
            )  # fmt: skip
            assert stack.tile == "CFHTLS_W_r_004000-010000" and stack.inputs_digest == unit.digest
            assert stack.node is not None and stack.node.name == B
            roles = s.execute(
                select(Image.filename, StackFile.role)
                .join(StackFile, StackFile.image_id == Image.id)
                .where(StackFile.stack_id == stack.id)
            ).all()
            assert sorted(roles) == [("a1", "scamp"), ("a1", "swarp"), ("a2", "scamp"),
                                     ("a2", "swarp")]  # fmt: skip
            frozen = s.scalars(select(StackRelease)).one()
            assert frozen.name == RELEASE and frozen.digest == plan.settings.digest

        # Again: nothing new.
        again = plan_auto(engine, config, AutoQuery())
        assert again.units == [] and [e.stack for e in again.existing] == [T1]
        assert again.frozen and again.ok

        # A new exposure on the tile: the unit is reported changed, never rewritten.
        put(demo, config, engine, "a3", A, 1000, ra=10.05)
        changed = plan_auto(engine, config, AutoQuery())
        assert changed.units == [] and not changed.ok
        [report] = changed.changed
        assert report.stack == T1 and report.added == ("scamp:a3", "swarp:a3")
        assert report.removed == () and f"remove {T1} first" in report.message
        applied = apply_auto(engine, config, changed)
        assert applied.units == [] and not applied.ok
        with Session(engine) as s:
            assert s.scalar(select(Stack.inputs_digest).where(Stack.name == T1)) == unit.digest
        assert commands.read_text().splitlines() == list(unit.commands)

        # The release's settings changed while it has a stack: refused, naming the change.
        edit_config(demo.config_path,
                    lambda st: st["releases"][0]["rules"].update(max_seeing=1.0))  # fmt: skip
        with pytest.raises(ReleaseFrozen) as info:
            plan_auto(engine, load_config(demo.config_path), AutoQuery())
        assert "rules.max_seeing" in str(info.value) and info.value.exit_code == 2
    finally:
        engine.dispose()


def test_removed_with_its_work_directory_then_planned_afresh(demo: DemoCluster) -> None:
    """The seed's F.A.Q.: a unit whose inputs changed is removed, then planned again. The
    remove (over SSH, as an operator runs it) takes the co-add's work directory on its
    partition with it, so the new unit never finds the old one's outputs there."""
    config = load_config(demo.config_path)
    engine = make_engine(config.db)
    try:
        put(demo, config, engine, "a1", B, 20_000, ra=10.0)
        put(demo, config, engine, "a2", B, 90_000, ra=10.1)
        [unit] = apply_auto(engine, config, plan_auto(engine, config, AutoQuery())).units
        workdir = Path(unit.unit.workdir)
        (workdir / "inputs").mkdir(parents=True)
        (workdir / f"{T1}.result.json").write_text("{}")  # a finished run's last output
        put(demo, config, engine, "a3", B, 1000, ra=10.05)
        [changed] = plan_auto(engine, config, AutoQuery()).changed
        assert changed.stack == T1

        args = ("--config", str(demo.config_path), "remove", T1)
        dry = run_spica(*args, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        rel = str(workdir.relative_to(demo.node_root(B)))
        assert rel in dry.stdout and workdir.is_dir()
        done = run_spica(*args, "--yes")
        assert done.returncode == 0, done.stderr
        assert not workdir.exists() and workdir.parent.is_dir()

        [again] = apply_auto(engine, config, plan_auto(engine, config, AutoQuery())).units
        assert (again.name, again.error) == (T1, None)
        assert {i.image for i in again.unit.inputs} == {"a1", "a2", "a3"}
    finally:
        engine.dispose()


def test_a_source_unlike_its_ingestion_adds_no_unit(demo: DemoCluster) -> None:
    config = load_config(demo.config_path)
    engine = make_engine(config.db)
    try:
        put(demo, config, engine, "a1", A, 20_000, ra=10.0,
            checksum="xxh128:" + "0" * 32)  # fmt: skip
        put(demo, config, engine, "a2", B, 90_000, ra=10.1)
        put(demo, config, engine, "b1", A, 1000, ra=10.5)  # its own tile, on A
        done = apply_auto(engine, config, plan_auto(engine, config, AutoQuery()))
        states = {u.name: (u.state, u.error) for u in done.units}
        state, error = states[T1]
        assert state == "failed" and error is not None
        assert "input a1" in error and "changed since it was ingested" in error
        assert states[f"CFHTLS_W_r_004200-010000_{RELEASE}"] == ("planned", None)
        assert not done.ok
        with Session(engine) as s:
            assert s.scalar(select(Stack.id).where(Stack.name == T1)) is None
        assert not (demo.node_root(B) / "stacks" / T1).exists()
        assert not (demo.node_root(B) / "raid1" / "inputs" / "03AL01" / "a1.fits.fz").exists()
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_image_mode_units_on_their_own_nodes(demo: DemoCluster) -> None:
    config = load_config(demo.config_path)
    engine = make_engine(config.db)
    try:
        put(demo, config, engine, "805282p", A, 2_000, ra=10.0, runid="03AL01")
        put(demo, config, engine, "805283p", B, 2_000, ra=10.1)
        done = apply_auto(engine, config, plan_auto(engine, config, AutoQuery(mode="image")))
        assert {(u.name, u.node, u.state) for u in done.units} == {
            (f"805282p_{RELEASE}", A, "planned"),
            (f"805283p_{RELEASE}", B, "planned"),
        }
        assert all(u.copies == () for u in done.units) and done.ok
        with Session(engine) as s:
            rows = s.execute(select(Stack.name, Stack.step, Stack.tile, Stack.runid)).all()
        assert sorted(rows) == [
            (f"805282p_{RELEASE}", "image", "805282p", "03AL01"),
            (f"805283p_{RELEASE}", "image", "805283p", "03AL01"),
        ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_node_down_during_the_copies(demo: DemoCluster) -> None:
    """A's server stopped: the unit needing a copy from A is not added and A is named
    unreachable; the unit on B alone is added."""
    config = load_config(demo.config_path)
    engine = make_engine(config.db)
    try:
        put(demo, config, engine, "a1", A, 2_000, ra=10.0)
        put(demo, config, engine, "a2", B, 9_000, ra=10.1)
        put(demo, config, engine, "b1", B, 1_000, ra=10.5)  # its own tile, on B
        plan = plan_auto(engine, config, AutoQuery())
        assert demo.stop_node(A)
        done = apply_auto(engine, config, plan, over_ssh=True)
        states = {u.name: u for u in done.units}
        assert states[T1].state == "failed" and "input a1" in (states[T1].error or "")
        assert states[f"CFHTLS_W_r_004200-010000_{RELEASE}"].state == "planned"
        assert done.unreachable == [A] and not done.ok
        with Session(engine) as s:
            assert s.scalar(select(Stack.id).where(Stack.name == T1)) is None
    finally:
        engine.dispose()

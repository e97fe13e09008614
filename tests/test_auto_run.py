"""A unit ``spica auto`` planned runs to completion with the real binaries: synthetic
dithered exposures on a demo node, graded and measured in dbspica, one tile on them; the
unit's ``commands.sh`` run line by line in its stack directory as the daemon runs it, and
its results recorded (total exposure = the inputs' sum)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.auto.apply import apply_auto
from spica_core.auto.plan import AutoQuery, plan_auto
from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Stack, StackResult
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.synth.layout import PHOTOMETRY
from tests.auto_support import edit_config, place
from tests.stack_support import require_tools, spica_argv, synthetic_stack

NODE = "mix1"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoCluster]:
    cluster = DemoCluster(tmp_path / "cluster")
    cluster.up(1)
    try:
        yield cluster
    finally:
        cluster.down()


def test_a_planned_unit_runs_to_its_results(demo: DemoCluster, tmp_path: Path) -> None:
    require_tools()
    root = demo.node_root(NODE)
    synthetic = synthetic_stack(root / "raid1" / "synthetic")
    tile = synthetic.unit.tile

    def edit(settings: dict[str, Any]) -> None:
        settings["db"]["url"] = f"sqlite:///{tmp_path}/dbspica.sqlite"
        settings["grids"] = [{
            "name": "one", "tile_pixels": tile.size[0], "pixel_scale": tile.pixel_scale,
            "row_step": 0.03, "exposure_size": 1.0,
            "fields": [{"name": "F", "ra_min": tile.ra, "ra_max": tile.ra,
                        "dec_min": tile.dec, "dec_max": tile.dec}],
        }]  # fmt: skip
        refcat = synthetic.unit.reference_catalogue
        settings["releases"] = [{"name": "T0003", "grid": "one", "rules": {"grades": ["A"]},
                                 "reference_catalogue": refcat}]  # fmt: skip

    edit_config(demo.config_path, edit)
    config = load_config(demo.config_path)
    prepare_database(config, create=True)
    engine = make_engine(config.db)
    try:
        phot_c, phot_k = PHOTOMETRY["r.MP9601"]
        for n, (spec, one) in enumerate(zip(synthetic.specs, synthetic.unit.inputs, strict=True)):
            place(engine, config, one.image, NODE, ra=spec.ra_deg, dec=spec.dec_deg,
                  path=one.path, checksum=one.checksum, filter=spec.filter,
                  exptime=spec.exptime, airmass=spec.airmass, bytes=Path(one.path).stat().st_size,
                  phot_c=None if n == 2 else phot_c, phot_k=phot_k)  # fmt: skip
        done = apply_auto(engine, config, plan_auto(engine, config, AutoQuery()))
        [unit] = done.units
        assert unit.state == "planned" and len(unit.unit.swarp_inputs) == len(synthetic.specs)
        cwd = root / "stacks" / unit.name
        env = {**os.environ, "SPICA_CONFIG": str(demo.config_path), "SPICA_STACK": unit.name,
               "SPICA_NODE": NODE}  # fmt: skip
        for number, line in enumerate(unit.commands, start=1):
            ran = subprocess.run(spica_argv(shlex.split(line)), cwd=cwd, env=env,
                                 capture_output=True, text=True, timeout=600)  # fmt: skip
            assert ran.returncode == 0, f"line {number}: {line}\n{ran.stderr[-3000:]}"
        made_up = Path(unit.unit.workdir) / "inputs" / f"{synthetic.specs[2].filename}.ahead"
        assert re.search(r"^PHOTFLAG=\s+F\b", made_up.read_text(), re.MULTILINE)
        with Session(engine) as s:
            stack_id = s.scalar(select(Stack.id).where(Stack.name == unit.name))
            result = s.scalars(select(StackResult).where(StackResult.stack_id == stack_id)).one()
            assert result.scamp_inputs == result.swarp_inputs == len(synthetic.specs)
            assert result.exptime == pytest.approx(sum(s.exptime for s in synthetic.specs))
            assert result.scamp_internal_rms is not None and result.scamp_internal_rms < 0.1
    finally:
        engine.dispose()

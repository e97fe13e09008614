"""The first and last lines of a stack unit: ``spica stack prepare`` on good, corrupt and
truncated exposures, and ``spica stack record`` reading real tool outputs into dbspica
(SQLite and MariaDB)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Stack, StackResult, StackRun
from spica_core.db.types import utcnow
from spica_core.errors import NotFound
from spica_core.qfin.measure import votable_rows
from spica_core.stacking.figures import stack_figures
from spica_core.stacking.outputs import StackOutputs
from spica_core.stacking.prepare import StackFailed, prepare_input
from spica_core.stacking.record import record_stack, step_of
from tests.conftest import invoke_spica
from tests.stack_support import SyntheticStack, require_tools, run_lines, synthetic_stack

DITHERS = ((0.0, 0.0), (15.0, 9.0), (-12.0, 14.0))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticStack]:
    """A small stack's real outputs, every line run but the record."""
    require_tools()
    stack = synthetic_stack(tmp_path_factory.mktemp("stack"), dithers=DITHERS, ccds=1,
                            ccd_shape=(900, 900), tile_pixels=900)  # fmt: skip
    run_lines(stack, skip=("record",))
    yield stack


def _out(stack: SyntheticStack) -> StackOutputs:
    return StackOutputs(workdir=Path(stack.unit.workdir), stack=stack.unit.name)


def test_figures_from_real_outputs(outputs: SyntheticStack) -> None:
    out = _out(outputs)
    figures = stack_figures(out)
    assert figures.scamp_inputs == figures.swarp_inputs == 3
    assert figures.exptime == sum(s.exptime for s in outputs.specs)
    assert figures.scamp_internal_rms is not None and 0 < figures.scamp_internal_rms < 0.1
    assert figures.scamp_external_rms is not None and figures.scamp_external_rms > 0
    assert figures.seeing is not None and 0.7 < figures.seeing < 0.95
    assert figures.sources > 10
    assert figures.background_rms is not None and figures.background_rms > 0
    assert figures.thumbnail_path == str(out.thumbnail)
    from PIL import Image

    with Image.open(out.thumbnail) as thumbnail:  # an 8-bit grey picture of the tile
        assert thumbnail.mode == "L" and thumbnail.size == outputs.unit.tile.size
    assert figures.completeness is not None and figures.zero_point is not None
    # SWarp's XML declares Weight_Type boolean: a strict VOTable parser refuses it.
    frames = votable_rows(out.swarp_xml, "Input_Image_Data", "stack S")
    assert len(frames) == 3 and all(f["Weight_Type"] == "MAP_WEIGHT" for f in frames)


def test_missing_coadd_is_named(outputs: SyntheticStack, tmp_path: Path) -> None:
    out = StackOutputs(workdir=tmp_path, stack=outputs.unit.name)
    with pytest.raises(StackFailed, match=f"SWarp's co-add {out.coadd} is missing"):
        stack_figures(out)


@pytest.fixture
def recorded_stack(db_engine: Engine, outputs: SyntheticStack) -> Engine:
    start = utcnow()
    with Session(db_engine) as s, s.begin():
        stack = Stack(name=outputs.unit.name, release="T0003", state="running")
        s.add(stack)
        s.flush()
        runs = [("spica stack prepare S --workdir W", 1, 1, 2.0),
                ("scamp @W/scamp.list -c stack.scamp", 2, 1, 5.0),  # failed, then requeued
                ("scamp @W/scamp.list -c stack.scamp", 2, 2, 1.5),
                ("SWarp @W/swarp.list", 3, 1, 3.0)]  # fmt: skip
        for command, line, attempt, seconds in runs:
            s.add(StackRun(stack_id=stack.id, line=line, attempt=attempt, command=command,
                           started_at=start, ended_at=start + timedelta(seconds=seconds),
                           exit_code=1 if attempt == 1 and line == 2 else 0))  # fmt: skip
    return db_engine


def test_record_writes_the_result_row_and_json(
    recorded_stack: Engine, outputs: SyntheticStack
) -> None:
    out = _out(outputs)
    for _ in range(2):  # a requeued record line rewrites the same row
        record = record_stack(recorded_stack, out.stack, out.workdir, "T0003")
    with Session(recorded_stack) as s:
        rows = s.scalars(select(StackResult)).all()
        assert len(rows) == 1
        row = rows[0]
        assert row.exptime == record.figures.exptime == sum(s.exptime for s in outputs.specs)
        assert row.scamp_internal_rms == record.figures.scamp_internal_rms
        assert row.coadd_path == str(out.coadd)
        assert row.step_seconds == {"prepare": 2.0, "scamp": 1.5, "swarp": 3.0}
    written = json.loads(out.result.read_text())
    assert written["figures"]["stack"] == out.stack and written["release"] == "T0003"


def test_record_of_an_unknown_stack_writes_nothing(
    db_engine: Engine, outputs: SyntheticStack
) -> None:
    out = _out(outputs)
    with pytest.raises(NotFound):
        record_stack(db_engine, "NOT_A_STACK", out.workdir, "T0003")


def test_step_of_lines() -> None:
    assert step_of("spica stack prepare S --workdir /w") == "prepare"
    assert step_of("/usr/bin/SWarp @/w/swarp.list") == "swarp"
    assert step_of("source-extractor '/w/a b.fits'") == "source-extractor"


# -- prepare ----------------------------------------------------------------------------


@pytest.fixture
def one_input(tmp_path: Path) -> SyntheticStack:
    return synthetic_stack(tmp_path, dithers=((0.0, 0.0),), ccds=2, ccd_shape=(64, 64),
                           tile_pixels=64)  # fmt: skip


def _prepare(stack: SyntheticStack) -> StackOutputs:
    item = stack.unit.inputs[0]
    out = _out(stack)
    prepare_input(out, image=item.image, path=Path(item.path), checksum=item.checksum,
                  ahead=item.ahead, scamp=True, swarp=True)  # fmt: skip
    return out


def test_prepare_lays_out_the_input_once(one_input: SyntheticStack) -> None:
    item = one_input.unit.inputs[0]
    out = _prepare(one_input)
    _prepare(one_input)  # requeued: its own entries rewritten, not doubled
    assert out.scamp_list.read_text() == f"{out.input_catalog(item.image)}\n"
    assert out.swarp_list.read_text() == f"{out.input_image(item.image)}\n"
    for path in (out.input_image(item.image), out.input_weight(item.image)):
        assert path.is_file()
    ahead = out.input_ahead(item.image).read_text().splitlines()
    assert sum(1 for line in ahead if line.strip() == "END") == 2  # one header per CCD
    assert any(line.startswith("PHOTFLAG=                    T") for line in ahead)
    # The primary header's cards SCAMP reads, repeated for every CCD.
    spec = one_input.specs[0]
    assert sum(1 for line in ahead if line.startswith(f"FILTER  = '{spec.filter}'")) == 2
    assert any(line.startswith("EXPTIME =") and f"{spec.exptime}" in line for line in ahead)


def test_ahead_option_wins_over_the_header(one_input: SyntheticStack) -> None:
    item = one_input.unit.inputs[0]
    out = _out(one_input)
    prepare_input(out, image=item.image, path=Path(item.path), ahead={"PHOT_K": 0.5})
    ahead = out.input_ahead(item.image).read_text().splitlines()
    assert [line[:30] for line in ahead if line.startswith("PHOT_K")] == [
        "PHOT_K  =                  0.5"
    ] * 2


def test_corrupt_exposure_fails_prepare_with_its_name(one_input: SyntheticStack) -> None:
    item = one_input.unit.inputs[0]
    out = _prepare(one_input)
    path = Path(item.path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StackFailed) as failed:
        _prepare(one_input)
    message = str(failed.value)
    assert item.image in message and str(path) in message and "corrupt or truncated" in message
    assert "replace the file" in message and "requeue" in message
    # Out of the lists: no later line reads what is left of the input.
    assert not out.swarp_list.read_text().strip() and not out.scamp_list.read_text().strip()


def test_truncated_exposure_fails_through_the_cli(one_input: SyntheticStack) -> None:
    item = one_input.unit.inputs[0]
    path = Path(item.path)
    path.write_bytes(path.read_bytes()[:5000])
    done = invoke_spica(
        "stack",
        "prepare",
        one_input.unit.name,
        "--workdir",
        one_input.unit.workdir,
        "--image",
        item.image,
        "--path",
        item.path,
        "--swarp",
        "--scamp",
    )  # fmt: skip  (no checksum: the FITS check finds it)
    assert done.returncode == 1, done.stderr
    assert item.image in done.stderr and "truncated" in done.stderr
    assert "requeue" in done.stderr


def test_missing_exposure_fails_prepare(one_input: SyntheticStack) -> None:
    item = one_input.unit.inputs[0]
    Path(item.path).unlink()
    with pytest.raises(StackFailed, match="does not exist"):
        _prepare(one_input)


def test_qfin_maps_are_used_when_given(one_input: SyntheticStack, tmp_path: Path) -> None:
    item = one_input.unit.inputs[0]
    out = _prepare(one_input)
    qfin = tmp_path / "qfin"
    qfin.mkdir()
    weight = qfin / f"{item.image}.weight.fits"
    weight.write_bytes(out.input_weight(item.image).read_bytes())
    prepare_input(out, image=item.image, path=Path(item.path), weight=weight)
    assert out.input_weight(item.image).resolve() == weight.resolve()
    with pytest.raises(StackFailed, match=r"weight map .* does not exist"):
        prepare_input(out, image=item.image, path=Path(item.path), weight=qfin / "gone.fits")

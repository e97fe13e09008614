"""QFin units end to end: planned and launched by ``spica qfin``, run by the node's real
daemon (``spica qfin maps``, the real ``source-extractor`` and ``psfex``, ``spica qfin
record``), their results in dbspica; a corrupt exposure fails its unit, the others go on.

Real parts: rendered MegaCam-like exposures (Moffat stars of a known FWHM, sky, Poisson and
read noise), the AstrOmatic binaries, a demo node over SSH with its daemon, dbspica on SQLite
and MariaDB.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Application, Image, ImageCcd, Problem, Stack, StackApp
from spica_core.demo.cluster import DemoCluster
from spica_core.qfin.report import read_report
from tests.conftest import invoke_spica, run_spica
from tests.daemon_support import wait_for
from tests.qfin_support import require_tools
from tests.qfin_units_support import (
    NODE,
    demo_cluster,
    exposure_spec,
    place_image,
    write_sky,
    write_without_wcs,
    write_zero_ccd,
)

RELEASE = "T0001"
SEEING = 0.9


@pytest.fixture
def demo(tmp_path: Path, db_url: str):
    require_tools()
    tools = [{"name": tool, "binary": tool} for tool in ("source-extractor", "psfex")]
    yield from demo_cluster(tmp_path, db_url, {"applications": tools}, slots=2)


def unit_state(demo: DemoCluster, name: str) -> str | None:
    engine = make_engine(load_config(demo.config_path).db)
    try:
        with Session(engine) as s:
            return s.scalar(select(Stack.state).where(Stack.name == name))
    finally:
        engine.dispose()


def test_qfin_units_measure_and_record_while_broken_exposures_fail_alone(
    demo: DemoCluster,
) -> None:
    runid_dir = demo.node_root(NODE) / "raid1" / "03AL01"
    columns = {"exptime": 300.0, "extensions": 2, "filter": "r.MP9601"}
    runid_dir.mkdir(parents=True)
    for name in ("811001p", "811003p"):
        write_sky(exposure_spec(name, fwhm=SEEING), runid_dir)
        place_image(demo, name, filename=f"{name}.fits.fz", **columns)
    # Three broken exposures: cut short, a CCD all zeros, a CCD without WCS.
    cut = write_sky(exposure_spec("811002p"), runid_dir, "fits")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    write_zero_ccd(exposure_spec("811005p"), runid_dir)
    write_without_wcs(exposure_spec("811006p"), runid_dir)
    for name in ("811002p", "811005p", "811006p"):
        place_image(demo, name, filename=f"{name}.fits", **columns)
    # An operator already graded 811003p: QFin proposes, it never overwrites that.
    place_image(demo, "811004p", partition=None)
    engine = make_engine(load_config(demo.config_path).db)
    with Session(engine) as s, s.begin():
        graded = s.scalars(select(Image).where(Image.filename == "811003p")).one()
        graded.grade, graded.graded_by, graded.grade_comment = "C", "alice", "Defocus?"

    launched = invoke_spica("--config", str(demo.config_path), "qfin", "--launch", "--json")
    assert launched.returncode == 0, launched.stderr
    units = {u["image"]: u["unit"] for u in json.loads(launched.stdout)["units"]}
    assert sorted(units) == ["811001p", "811002p", "811003p", "811005p", "811006p"]
    demo.up(daemons=True)
    for unit in units.values():
        wait_for(
            lambda u=unit: unit_state(demo, u) in ("completed", "failed"), 300, f"{unit} to end"
        )
    assert {i: unit_state(demo, u) for i, u in units.items()} == {
        "811001p": "completed",
        "811002p": "failed",
        "811003p": "completed",
        "811005p": "failed",
        "811006p": "failed",
    }

    with Session(engine) as s:
        images = {i.filename: i for i in s.scalars(select(Image))}
        ccds = s.execute(
            select(Image.filename, ImageCcd.ccd, ImageCcd.seeing, ImageCcd.sources)
            .join(Image, Image.id == ImageCcd.image_id)
            .order_by(Image.filename, ImageCcd.ccd)
        ).all()
        problems = list(s.scalars(select(Problem).where(Problem.kind == "software")))
        failed_lines = dict(
            s.execute(select(Stack.name, Stack.failed_line).where(Stack.state == "failed")).all()
        )
        used = s.execute(
            select(Application.name, StackApp.version)
            .join(StackApp, StackApp.application_id == Application.id)
            .join(Stack, Stack.id == StackApp.stack_id)
            .where(Stack.name == units["811001p"])
        ).all()
    engine.dispose()

    done = images["811001p"]
    assert (done.qf_status, done.qf_release, done.qf_error) == ("done", RELEASE, None)
    assert done.seeing is not None and abs(done.seeing - SEEING) / SEEING < 0.05
    assert done.sources and done.sources > 100 and done.psf_stars and done.psf_stars > 40
    assert done.ccds_measured == 2 and done.background and done.background_rms
    assert done.elongation is not None and done.elongation < 1.1
    workdir = demo.node_root(NODE) / "raid1" / "qfin" / RELEASE / "811001p"
    assert done.report_path == str(workdir / "811001p.qfin.json")
    assert done.weight_path == str(workdir / "811001p.weight.fits")
    assert done.flag_path == str(workdir / "811001p.flag.fits")
    report = read_report(Path(done.report_path))
    assert report.figures.seeing == done.seeing and report.figures.ccds_expected == 2
    # The release's proposal, and the image's grade while no operator graded it.
    assert (done.grade_proposal, done.grade_reasons) == (
        report.proposal.grade,
        report.proposal.reasons,
    )
    assert done.grade == done.grade_proposal and done.graded_by is None
    # The versions the unit ran with: in its report and as its stack_app rows.
    assert sorted(report.versions) == ["psfex", "source-extractor"]
    assert dict(used) == report.versions
    assert [(c, n) for f, c, _, n in ccds if f == "811001p"] == [
        (c.ccd, c.sources) for c in report.figures.ccds
    ]
    assert [c for f, c, _, _ in ccds] == [1, 2, 1, 2]  # 811001p and 811003p, no broken one

    kept = images["811003p"]
    assert (kept.qf_status, kept.grade, kept.graded_by) == ("done", "C", "alice")
    assert kept.grade_proposal == done.grade_proposal  # the same sky, the same proposal

    # Each broken exposure: its unit failed at `spica qfin maps` (before any tool ran), the
    # image failed with a readable reason naming it (and its CCD), a problem row about it.
    for name, why in (
        ("811002p", "811002p"),
        ("811005p", "CCD ccd01 (extension 2)"),
        ("811006p", "no usable celestial WCS"),
    ):
        broken = images[name]
        assert broken.qf_status == "failed" and broken.seeing is None
        assert broken.report_path is None and broken.qf_error and name in broken.qf_error
        assert why in broken.qf_error
        assert failed_lines[units[name]] == 1
        (problem,) = [p for p in problems if p.message == broken.qf_error]
        assert (problem.node, problem.stack, problem.runid, problem.filter, problem.release) == (
            NODE,
            units[name],
            "03AL01",
            "r.MP9601",
            RELEASE,
        )
        log = demo.node_root(NODE) / "stacks" / units[name] / "logs" / "001.log"
        assert broken.qf_error in log.read_text()
    assert images["811004p"].qf_status == "new"  # not on a node: never planned


# --------------------------------------------------------------------------- record alone


@pytest.fixture
def node(tmp_path: Path, db_url: str):  # type: ignore[no-untyped-def]
    """A node's config and dbspica (release T0003), an image 811001p of runid 03AL01."""
    from spica_core.db.models import Runid
    from tests.daemon_support import make_node

    env = make_node(tmp_path, db_url)
    engine = env.engine()
    with Session(engine) as s, s.begin():
        run = Runid(name="03AL01")
        s.add(run)
        s.flush()
        s.add(Image(filename="811001p", runid_id=run.id, filter="r.MP9601", exptime=300.0))
    engine.dispose()
    return env


def record(env, workdir: Path, image: str = "811001p", **environ: str):  # type: ignore[no-untyped-def]
    return invoke_spica(
        "--config", str(env.config_path), "qfin", "record", image,
        "--workdir", str(workdir), "--release", "T0003",
        "--image-path", str(workdir.parent / f"{image}.fits.fz"),
        env=environ,
    )  # fmt: skip


def test_record_writes_once_and_again_replaces(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A requeued record line rewrites the image's results: its CCD rows are replaced."""
    from tests.qfin_support import run_qfin

    require_tools()
    path = write_sky(exposure_spec("811001p", fwhm=SEEING), tmp_path)
    workdir = tmp_path / "qfin"
    run_qfin(path, workdir, "811001p", release="T0003")  # the tools' lines, as a unit runs them
    for _ in range(2):
        done = record(node, workdir, SPICA_NODE="mix1")
        assert done.returncode == 0, done.stderr
        assert "811001p: seeing 0.9" in done.stderr
    engine = node.engine()
    with Session(engine) as s:
        image = s.scalars(select(Image).where(Image.filename == "811001p")).one()
        rows = s.scalars(select(ImageCcd.ccd).where(ImageCcd.image_id == image.id)).all()
    engine.dispose()
    assert sorted(rows) == [1, 2] and image.qf_status == "done" and image.qf_release == "T0003"
    report = read_report(workdir / "811001p.qfin.json")
    assert report.figures.seeing == image.seeing
    assert report.created_at.endswith("Z") and datetime.fromisoformat(report.created_at)


def test_record_without_outputs_fails_the_image_with_a_problem(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    workdir = tmp_path / "qfin"
    workdir.mkdir()
    failed = record(node, workdir, SPICA_STACK="811001p_qfin_T0003", SPICA_NODE="mix1")
    assert failed.returncode == 1
    assert "spica: error:" in failed.stderr and "811001p" in failed.stderr
    engine = node.engine()
    with Session(engine) as s:
        image = s.scalars(select(Image).where(Image.filename == "811001p")).one()
        problem = s.scalars(select(Problem)).one()
    engine.dispose()
    assert image.qf_status == "failed" and image.qf_error and image.seeing is None
    assert image.qf_error.splitlines()[0] in failed.stderr
    assert (problem.kind, problem.node, problem.stack, problem.runid, problem.filter) == (
        "software", "mix1", "811001p_qfin_T0003", "03AL01", "r.MP9601",
    )  # fmt: skip
    assert not (workdir / "811001p.qfin.json").exists()


def test_record_refuses_unknown_images_and_bad_names(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    unknown = record(node, tmp_path, "999999p")
    assert unknown.returncode == 1 and "no image named 999999p" in unknown.stderr
    hostile = record(node, tmp_path, "811001p", SPICA_STACK="../../etc")
    assert hostile.returncode == 2 and "../../etc" in hostile.stderr
    engine = node.engine()
    with Session(engine) as s:
        assert s.scalars(select(Problem)).all() == []
        assert s.scalar(select(Image.qf_status)) == "new"
    engine.dispose()


def test_maps_of_a_broken_image_fails_readably_even_without_dbspica(tmp_path: Path) -> None:
    """dbspica unreachable must not hide why the image is broken (the unit fails at its
    line all the same, and the daemon files its problem through its journal)."""
    config = tmp_path / "spica.toml"
    config.write_text('[db]\nurl = "sqlite:////nonexistent-spica-dir/dbspica.sqlite"\n')
    image = write_sky(exposure_spec("811001p", ccds=1), tmp_path, "fits")
    image.write_bytes(image.read_bytes()[:5000])
    failed = run_spica(
        "--config", str(config), "qfin", "maps", "811001p",
        "--image-path", str(image), "--workdir", str(tmp_path / "qfin"),
    )  # fmt: skip
    assert failed.returncode == 1
    assert "811001p" in failed.stderr and "not recorded in dbspica" in failed.stderr
    assert not (tmp_path / "qfin" / "811001p.weight.fits").exists()

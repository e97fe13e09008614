"""The per-image QFin report: written atomically, read back strictly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spica_core.qfin.measure import report_path
from spica_core.qfin.report import ReportUnreadable, read_report, write_report
from spica_core.qfin.result import CcdFigures, GradeProposal, ImageFigures, QfinReport


def _report() -> QfinReport:
    ccds = [
        CcdFigures(
            ccd=i, extname=f"ccd{i - 1:02d}", seeing=0.8 + i / 100, elongation=1.05,
            sources=200 + i, psf_stars=40, background=1000.5, background_rms=25.2,
            saturation=65535.0,
        )
        for i in (1, 2)
    ]  # fmt: skip
    figures = ImageFigures(
        image="811001p", release="T0003", ccds=ccds, ccds_expected=2, seeing=0.815,
        elongation=1.05, sources=403, psf_stars=80, background=1000.5, background_rms=25.2,
        exptime=600.0, filter="r.MP9601",
    )  # fmt: skip
    return QfinReport(
        figures=figures,
        proposal=GradeProposal(grade="B", reasons=['seeing 0.815" > 0.8"']),
        image_path="/data/raid1/811001p.fits",
        weight_path="/data/raid1/qfin/811001p/811001p.weight.fits",
        flag_path="/data/raid1/qfin/811001p/811001p.flag.fits",
        catalog_path="/data/raid1/qfin/811001p/811001p.cat",
        psf_path="/data/raid1/qfin/811001p/811001p.psf",
        versions={"source-extractor": "2.25.0", "psfex": "3.21.1"},
        created_at="2026-12-02T16:00:00+00:00",
    )


def test_round_trip(tmp_path: Path) -> None:
    workdir = tmp_path / "qfin"
    workdir.mkdir()
    path = report_path(workdir, "811001p")
    assert path == workdir / "811001p.qfin.json"
    write_report(path, _report())
    assert read_report(path) == _report()
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in workdir.iterdir()] == [path.name]  # no temporary left


def test_rewrite_replaces_the_whole_report(tmp_path: Path) -> None:
    path = report_path(tmp_path, "811001p")
    path.write_text("{half a report")
    write_report(path, _report())
    assert read_report(path) == _report()


def _tampered(tmp_path: Path, change: object) -> Path:
    path = tmp_path / "r.qfin.json"
    write_report(path, _report())
    data = json.loads(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["figures"]["ccds"][1].update(seeing="0.8"), "figures.ccds[1].seeing"),
        (lambda d: d["figures"]["ccds"][0].pop("sources"), "sources"),
        (lambda d: d["figures"].update(psf_stars=80.0), "figures.psf_stars"),
        (lambda d: d["proposal"].update(reasons="none"), "proposal.reasons"),
        (lambda d: d.pop("catalog_path"), "catalog_path"),
    ],
)
def test_strict_decode_names_the_field(tmp_path: Path, change: object, field: str) -> None:
    path = _tampered(tmp_path, change)
    with pytest.raises(ReportUnreadable) as caught:
        read_report(path)
    assert field in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_and_garbage_reports_are_named(tmp_path: Path) -> None:
    with pytest.raises(ReportUnreadable, match="missing"):
        read_report(tmp_path / "none.qfin.json")
    garbage = tmp_path / "g.qfin.json"
    garbage.write_bytes(b"\x00\xff not json")
    with pytest.raises(ReportUnreadable, match=r"g\.qfin\.json: not JSON"):
        read_report(garbage)

"""QFin's figures against the truth: the real source-extractor and psfex on synthetic
MegaCam exposures drawn with a known Moffat PSF and sky, and against an independent measure
(``sep``) of the same pixels.

Targets (the issue's): seeing within 5% of the injected FWHM from 0.6" to 1.4" and within
5% of the independent estimate; background within 2% of the injected sky.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from spica_core.qfin.measure import QfinFailed, measure_outputs, report_path
from spica_core.qfin.outputs import QfinOutputs
from spica_core.synth import observing
from spica_core.synth.layout import NATIVE_SCALE, ExposureSpec
from spica_core.synth.truth import write_sky_exposure
from tests.qfin_support import independent_seeing, require_tools, run_qfin

#: Small CCDs cut at MegaCam's native scale: enough bright stars for PSFEx, seconds to run.
CCDS, SHAPE = 2, (1536, 1536)


def _spec(fwhm: float, name: str = "811001p", **extra: object) -> ExposureSpec:
    return ExposureSpec(
        filename=name, runid="03AQ01", qrunid="03AQ01", filter="r.MP9601", object="w1.+0+0",
        ra_deg=34.5, dec_deg=-7.0, exptime=300.0, start=datetime(2003, 2, 3, 8, tzinfo=UTC),
        airmass=1.2, ccd_shape=SHAPE, ccds=CCDS, pixel_scale=NATIVE_SCALE, fwhm=fwhm,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def _within(value: float | None, expected: float, tolerance: float) -> bool:
    return value is not None and abs(value / expected - 1.0) <= tolerance


@pytest.mark.parametrize("fwhm", [0.6, 0.8, 1.0, 1.2, 1.4])
def test_seeing_and_background_against_truth_and_sep(tmp_path: Path, fwhm: float) -> None:
    require_tools()
    spec = _spec(fwhm)
    image = write_sky_exposure(spec, tmp_path / "raid", "fits.fz", truth_dir=tmp_path / "truth")
    workdir = tmp_path / "qfin" / "811001p"
    figures = run_qfin(image, workdir, "811001p")

    assert figures.ccds_expected == CCDS
    assert [c.ccd for c in figures.ccds] == [1, 2]
    assert [c.extname for c in figures.ccds] == ["ccd00", "ccd01"]
    independent = []
    with fits.open(image) as hdus:
        for ccd in figures.ccds:
            sky = observing.sky_level(spec, ccd.ccd - 1)
            assert _within(ccd.seeing, fwhm, 0.05), (ccd, fwhm)
            assert _within(ccd.background, sky, 0.02), (ccd, sky)
            assert ccd.psf_stars >= 10, ccd
            assert ccd.sources > ccd.psf_stars
            assert ccd.elongation is not None and 1.0 <= ccd.elongation < 1.1, ccd
            assert ccd.saturation == spec.saturate
            seeing, _beta, stars = independent_seeing(
                hdus[ccd.ccd].data, NATIVE_SCALE, spec.saturate
            )
            assert stars >= 5, (ccd, stars)
            independent.append(seeing)
    sep_seeing = float(np.median(independent))
    assert _within(figures.seeing, fwhm, 0.05), (figures.seeing, fwhm)
    assert _within(figures.seeing, sep_seeing, 0.05), (figures.seeing, sep_seeing)
    sky = observing.sky_level(spec, 0)
    assert _within(figures.background, sky, 0.02), (figures.background, sky)
    assert figures.psf_stars == sum(c.psf_stars for c in figures.ccds)
    assert figures.exptime == 300.0 and figures.filter == "r.MP9601"
    print(
        f'\nQFin accuracy {fwhm:.1f}": PSFEx {figures.seeing:.4f}" '
        f"({figures.seeing / fwhm - 1:+.2%} of injected, {figures.seeing / sep_seeing - 1:+.2%}"
        f' of sep {sep_seeing:.4f}"); background {figures.background:.2f} vs sky {sky:.2f} '
        f"({figures.background / sky - 1:+.2%}); PSF stars {figures.psf_stars}, "
        f"sources {figures.sources}"
    )


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One exposure run through the unit's lines: (image, work directory)."""
    require_tools()
    root = tmp_path_factory.mktemp("qfin-outputs")
    image = write_sky_exposure(_spec(0.9), root / "raid", "fits", truth_dir=root / "truth")
    workdir = root / "qfin" / "811001p"
    run_qfin(image, workdir, "811001p")
    return image, workdir


def _copy(measured: tuple[Path, Path], tmp_path: Path, output: str) -> tuple[Path, Path, Path]:
    """A copy of the measured work directory: (image, workdir, the copy's ``output`` file)."""
    image, source = measured
    workdir = tmp_path / "w"
    shutil.copytree(source, workdir)
    path = getattr(QfinOutputs(workdir=workdir, image="811001p", image_path=image), output)
    return image, workdir, path


def _fails_naming(image: Path, workdir: Path, path: Path) -> None:
    with pytest.raises(QfinFailed) as caught:
        measure_outputs(workdir, image="811001p", release="T0001", image_path=image)
    assert "image 811001p" in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("missing", ["catalog", "psf", "psfex_xml", "psf_stars"])
def test_missing_outputs_name_the_file(
    measured: tuple[Path, Path], tmp_path: Path, missing: str
) -> None:
    image, workdir, path = _copy(measured, tmp_path, missing)
    path.unlink()
    _fails_naming(image, workdir, path)


@pytest.mark.parametrize("broken", ["catalog", "psfex_xml", "psf_stars"])
def test_unusable_outputs_name_the_file(
    measured: tuple[Path, Path], tmp_path: Path, broken: str
) -> None:
    image, workdir, path = _copy(measured, tmp_path, broken)
    path.write_bytes(path.read_bytes()[:1000])
    _fails_naming(image, workdir, path)


def test_the_figures_of_a_run_read_twice_are_the_same(measured: tuple[Path, Path]) -> None:
    image, workdir = measured
    first = measure_outputs(workdir, image="811001p", release="T0001", image_path=image)
    assert first == measure_outputs(workdir, image="811001p", release="T0001", image_path=image)
    assert first.seeing is not None and abs(first.seeing / 0.9 - 1) < 0.05


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _zero_ccd(path: Path) -> None:
    with fits.open(path, mode="update") as hdus:
        hdus[2].data[:] = 0


def _drop_wcs(path: Path) -> None:
    with fits.open(path, mode="update") as hdus:
        for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CD1_1", "CD2_2"):
            del hdus[1].header[key]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate, "truncated"),
        (_zero_ccd, "CCD ccd01 (extension 2)"),
        (_drop_wcs, "CCD ccd00 (extension 1)"),
    ],
)
def test_corrupt_exposure_fails_at_the_first_line_and_writes_nothing(
    tmp_path: Path, damage: object, expected: str
) -> None:
    require_tools()
    image = write_sky_exposure(_spec(0.8), tmp_path / "raid", "fits", truth_dir=tmp_path / "t")
    damage(image)  # type: ignore[operator]
    workdir = tmp_path / "qfin" / "811001p"
    with pytest.raises(QfinFailed) as caught:
        run_qfin(image, workdir, "811001p")
    message = str(caught.value)
    assert "image 811001p" in message and expected in message, message
    assert not report_path(workdir, "811001p").exists()
    assert sorted(p.name for p in workdir.iterdir()) == []


def test_ccds_too_small_for_a_psf_have_no_seeing(tmp_path: Path) -> None:
    """PSFEx finds too few stars: the unit still completes, the seeing is unknown (None),
    never a made-up figure; background and counts are still measured."""
    require_tools()
    spec = ExposureSpec(**{**_spec(0.8).__dict__, "ccd_shape": (160, 160)})
    image = write_sky_exposure(spec, tmp_path / "raid", "fits", truth_dir=tmp_path / "t")
    figures = run_qfin(image, tmp_path / "qfin" / "811001p", "811001p")
    assert figures.seeing is None and figures.elongation is None
    assert figures.psf_stars == 0
    assert [c.seeing for c in figures.ccds] == [None, None]
    sky = observing.sky_level(spec, 0)
    assert all(_within(c.background, sky, 0.02) for c in figures.ccds)


def test_outputs_are_read_without_astropy(measured: tuple[Path, Path]) -> None:
    """The unit's last line reads the tools' outputs and the image's primary header through
    cfitsio, in a fresh process as on a node: astropy's import is never paid there."""
    image, workdir = measured
    code = (
        "import json, sys\nfrom pathlib import Path\n"
        "from spica_core.qfin.measure import measure_outputs\n"
        f"f = measure_outputs(Path({str(workdir)!r}), image='811001p', release='T0001', "
        f"image_path=Path({str(image)!r}))\n"
        "print(json.dumps([f.exptime, f.filter, f.ccds_expected, len(f.ccds), "
        "'astropy' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [300.0, "r.MP9601", CCDS, CCDS, False]

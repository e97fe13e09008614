"""Synthetic MegaCam-like exposures: reproducible, and saying what an independent reader
(astropy.io.fits, astropy.wcs, astropy.time, astropy.coordinates) finds in them."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from spica_core.synth.layout import (
    COLUMNS,
    GAP_X,
    NATIVE_SCALE,
    NATIVE_SHAPE,
    ExposureSpec,
    sexagesimal,
)
from spica_core.synth.runid import RunidPlan, exposure_specs, write_runid
from spica_core.synth.writer import CONTAINERS, exposure_bytes, write_exposure

SPEC = ExposureSpec(
    filename="811001p",
    runid="03AF19",
    qrunid="03AQ02",
    filter="r.MP9601",
    object="w1.+1-1",
    ra_deg=35.512345,
    dec_deg=-8.004321,
    exptime=600.0,
    start=datetime(2003, 6, 25, 14, 2, 7, 250000, tzinfo=UTC),
    airmass=1.213,
    gains=(1.55, 1.72),
)


@pytest.mark.parametrize("container", CONTAINERS)
def test_same_spec_same_bytes(container: str) -> None:
    assert exposure_bytes(SPEC, container) == exposure_bytes(SPEC, container)  # type: ignore[arg-type]


@pytest.mark.parametrize("container", CONTAINERS)
def test_astropy_reads_36_ccds(tmp_path: Path, container: str) -> None:
    path = write_exposure(SPEC, tmp_path, container)  # type: ignore[arg-type]
    assert path.name == f"811001p.{container}"
    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert len(hdul) == 37
        primary = hdul[0].header
        assert primary["RUNID"] == "03AF19" and primary["QRUNID"] == "03AQ02"
        assert primary["FILTER"] == "r.MP9601" and primary["OBJECT"] == "w1.+1-1"
        assert primary["INSTRUME"] == "MegaPrime" and primary["NEXTEND"] == 36
        assert "GAIN" not in primary and "SATURATE" not in primary
        first = hdul[1]
        assert first.header["GAIN"] == 1.55 and hdul[2].header["GAIN"] == 1.72
        assert first.data.shape == (32, 32) and first.data.dtype.kind == "u"
        assert abs(float(first.data.mean()) - 1000) < 20


def test_compressed_pixels_are_the_plain_ones(tmp_path: Path) -> None:
    plain = write_exposure(SPEC, tmp_path / "a", "fits")
    packed = write_exposure(SPEC, tmp_path / "b", "fits.fz")
    with fits.open(plain) as a, fits.open(packed) as b:
        assert isinstance(b[5], fits.CompImageHDU)
        for i in (1, 20, 36):
            np.testing.assert_array_equal(a[i].data, b[i].data)


def test_times_agree_with_astropy_time() -> None:
    header = fits.Header(_primary(SPEC))
    when = Time(f"{header['DATE-OBS']}T{header['UTC-OBS']}", scale="utc")
    assert header["MJD-OBS"] == pytest.approx(when.mjd, abs=1e-7)
    assert when.datetime.replace(tzinfo=UTC) == SPEC.start


def test_sexagesimal_agrees_with_astropy_coordinates() -> None:
    header = fits.Header(_primary(SPEC))
    coord = SkyCoord(header["RA"], header["DEC"], unit=(u.hourangle, u.deg))
    assert coord.ra.deg == pytest.approx(header["RA_DEG"], abs=0.01 / 3600 * 15)
    assert coord.dec.deg == pytest.approx(header["DEC_DEG"], abs=0.1 / 3600)


@pytest.mark.parametrize("value", [0.0, 0.0001, 59.99999, 179.999999, 359.9999999, -0.5, -89.9])
def test_sexagesimal_rounding_carries(value: float) -> None:
    if value >= 0:
        text = sexagesimal(value, hours=True, decimals=2)
        difference = (Angle(text, unit=u.hourangle).deg - value + 180) % 360 - 180
        assert difference == pytest.approx(0, abs=1e-3)
    text = sexagesimal(value if abs(value) <= 90 else 45.0, hours=False, decimals=1)
    assert ":60" not in text
    assert Angle(text, unit=u.deg).deg == pytest.approx(
        value if abs(value) <= 90 else 45.0, abs=1e-4
    )


def test_ccd_wcs_lays_out_the_megacam_focal_plane(tmp_path: Path) -> None:
    """Each CCD's centre falls where MegaCam's geometry puts it, at any pixel shape."""
    pointing = SkyCoord(SPEC.ra_deg, SPEC.dec_deg, unit="deg")
    width = NATIVE_SHAPE[1] * NATIVE_SCALE / 3600
    for shape in ((32, 32), (100, 50)):
        spec = ExposureSpec(**{**SPEC.__dict__, "ccd_shape": shape})
        with fits.open(write_exposure(spec, tmp_path / str(shape), "fits")) as hdul:
            centres = []
            for hdu in hdul[1:]:
                ny, nx = hdu.data.shape
                centres.append(WCS(hdu.header).pixel_to_world((nx - 1) / 2, (ny - 1) / 2))
        # The mosaic is symmetric about the pointing; the corner CCDs are ~0.6 deg out.
        mean = SkyCoord(
            np.mean([c.ra.deg for c in centres]), np.mean([c.dec.deg for c in centres]), unit="deg"
        )
        assert mean.separation(pointing).arcsec < 1.0
        # Neighbours in a row are one CCD width plus the gap apart.
        step = centres[0].separation(centres[1]).deg
        assert step == pytest.approx(width + GAP_X / 3600, rel=1e-3)
        far = centres[0].separation(centres[COLUMNS * 4 - 1]).deg
        assert 1.0 < far < 1.3
        # x runs to the east's opposite (RA decreases with x), as in CFHT images.
        assert centres[1].ra.deg < centres[0].ra.deg


def test_runid_tree(tmp_path: Path) -> None:
    plan = RunidPlan("03AL02", 5, seed=7, ccds=4)
    paths = write_runid(plan, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f"03AL02/{811001 + i}p.fits.gz" for i in range(5)
    ]
    specs = list(exposure_specs(plan))
    assert specs == list(exposure_specs(plan))  # seeded
    assert all(s.qrunid == specs[0].qrunid and s.qrunid.startswith("03AQ") for s in specs)
    assert all(
        datetime(2003, 2, 1, tzinfo=UTC) <= s.start < datetime(2003, 8, 1, tzinfo=UTC)
        for s in specs
    )
    assert [s.start for s in specs] == sorted(s.start for s in specs)
    with fits.open(paths[0]) as hdul:
        assert len(hdul) == 5 and hdul[0].header["RUNID"] == "03AL02"
    assert list(exposure_specs(RunidPlan("03AL02", 5, seed=8))) != specs


def test_overrides_change_and_remove_cards() -> None:
    spec = ExposureSpec(**{**SPEC.__dict__, "overrides": {"RA_DEG": None, "RA": "2h", "NEW": 1}})
    header = fits.Header(_primary(spec))
    assert "RA_DEG" not in header and header["RA"] == "2h" and header["NEW"] == 1
    assert not math.isnan(header["DEC_DEG"])


def _primary(spec: ExposureSpec) -> list[tuple[object, ...]]:
    from spica_core.synth.layout import primary_cards

    return list(primary_cards(spec))

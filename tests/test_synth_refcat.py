"""The synthetic sky's reference catalogue: a FITS_LDAC file astropy reads as SCAMP's layout,
with survey-like errors; and the real SExtractor and SCAMP solving a synthetic exposure
against it, finding the pointing error the headers were given."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from spica_core.synth.refcat import write_reference_catalogue
from spica_core.synth.sky import SKY, STAR, sources_in
from spica_core.synth.truth import truth_path, write_sky_exposure
from tests.conftest import require
from tests.test_synth_sky import SPEC

CENTRE = (35.5, -8.0)
RADIUS = 0.15


def test_reference_reads_back_as_scamp_layout(tmp_path: Path) -> None:
    path = write_reference_catalogue(tmp_path / "ref.ldac", CENTRE, RADIUS)
    again = write_reference_catalogue(tmp_path / "again.ldac", CENTRE, RADIUS)
    assert path.read_bytes() == again.read_bytes()
    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert [h.name for h in hdul] == ["PRIMARY", "LDAC_IMHEAD", "LDAC_OBJECTS"]
        imhead = hdul["LDAC_IMHEAD"]
        assert imhead.columns.names == ["Field Header Card"]
        cards = imhead.data["Field Header Card"][0]
        assert imhead.header["TDIM1"] == f"(80, {len(cards)})"
        header = fits.Header.fromstring("".join(c.ljust(80) for c in cards))
        centre = WCS(header).pixel_to_world((header["NAXIS1"] - 1) / 2, (header["NAXIS2"] - 1) / 2)
        assert centre.separation(SkyCoord(*CENTRE, unit="deg")).arcsec < 0.2
        objects = hdul["LDAC_OBJECTS"]
        names = objects.columns.names
        for name in ("X_WORLD", "Y_WORLD", "ERRA_WORLD", "ERRB_WORLD", "ERRTHETA_WORLD"):
            assert name in names
        assert {"MAG", "MAGERR", "OBSDATE"} <= set(names)
        assert objects.columns["X_WORLD"].format == "D" and objects.columns["X_WORLD"].unit == "deg"
        data = objects.data
    assert len(data) > 200
    where = SkyCoord(data["X_WORLD"], data["Y_WORLD"], unit="deg")
    assert where.separation(SkyCoord(*CENTRE, unit="deg")).deg.max() < RADIUS + 0.001
    error = data["ERRA_WORLD"] * 3600
    assert error.min() > 0.02 and error.max() < 0.5 and np.median(error) < 0.1
    assert np.all(data["ERRB_WORLD"] == data["ERRA_WORLD"])
    assert data["MAGERR"].min() > 0.005 and data["MAGERR"].max() < 0.2
    assert data["MAG"].min() > 15.5 and data["MAG"].max() < 22.5
    assert np.all(data["OBSDATE"] == 2000.0)
    # The stars are the sky's: each reference is its star, scattered by its stated error.
    truth = sources_in(SKY, (CENTRE[0] - 0.2, CENTRE[0] + 0.2), (CENTRE[1] - 0.2, CENTRE[1] + 0.2))
    stars = truth.take(truth.kind == STAR)
    # Nearest star of each reference, on the tangent plane (arcsec).
    cos_dec = np.cos(np.radians(CENTRE[1]))
    dx = (data["X_WORLD"][:, None] - stars.ra[None, :]) * cos_dec * 3600
    dy = (data["Y_WORLD"][:, None] - stars.dec[None, :]) * 3600
    distances = np.hypot(dx, dy)
    index = distances.argmin(axis=1)
    normalised = distances[np.arange(len(data)), index] / error
    assert 1.0 < float(np.median(normalised)) < 1.4  # Rayleigh median of 2D unit errors: 1.18
    mag = stars.mag[index]
    pulls = (data["MAG"] - mag) / data["MAGERR"]
    assert 0.85 < float(np.std(pulls)) < 1.15


def _source_extractor(image: Path, catalogue: Path, workdir: Path) -> None:
    params = workdir / "scamp.param"
    params.write_text(
        "\n".join(
            [
                "XWIN_IMAGE",
                "YWIN_IMAGE",
                "ERRAWIN_IMAGE",
                "ERRBWIN_IMAGE",
                "ERRTHETAWIN_IMAGE",
                "FLUX_AUTO",
                "FLUXERR_AUTO",
                "FLAGS",
            ]
        )
        + "\n"
    )
    subprocess.run(
        [
            "source-extractor",
            str(image),
            "-c",
            "/dev/null",
            "-CATALOG_TYPE",
            "FITS_LDAC",
            "-CATALOG_NAME",
            str(catalogue),
            "-PARAMETERS_NAME",
            str(params),
            "-FILTER",
            "N",
            "-DETECT_THRESH",
            "5",
            "-VERBOSE_TYPE",
            "QUIET",
        ],
        check=True,
        cwd=workdir,
        capture_output=True,
    )


def _scamp_headers(path: Path) -> list[fits.Header]:
    """SCAMP's ``.head``: one header per CCD, ``END`` between them; its UTF-8 credits
    cleaned first (astropy's parser takes ASCII only)."""
    text = path.read_bytes().decode("utf-8", "replace")
    text = "".join(c if 32 <= ord(c) < 127 or c == "\n" else " " for c in text)
    blocks, lines = [], []
    for line in text.splitlines():
        if line.startswith("END") and line[3:].strip() == "":
            blocks.append(fits.Header.fromstring("\n".join(lines), sep="\n"))
            lines = []
        else:
            lines.append(line)
    return blocks


def test_scamp_solves_an_exposure_against_the_reference(tmp_path: Path) -> None:
    """SExtractor's catalogue of a synthetic exposure whose headers point 3.6" off, matched
    by SCAMP to the reference catalogue: the solved WCS puts the truth's stars back where
    they are, within a tenth of an arcsecond."""
    for tool in ("source-extractor", "scamp"):
        require(shutil.which(tool) is not None, f"{tool} is not installed (apt install {tool})")
    spec = dataclasses.replace(SPEC, ccds=4, pointing_error=(3.0, -2.0), fwhm=0.8)
    image = write_sky_exposure(spec, tmp_path, "fits")
    reference = write_reference_catalogue(tmp_path / "ref.ldac", (spec.ra_deg, spec.dec_deg), 0.5)
    catalogue = tmp_path / "811001p.ldac"
    _source_extractor(image, catalogue, tmp_path)
    subprocess.run(
        [
            "scamp",
            str(catalogue),
            "-c",
            "/dev/null",
            "-ASTREF_CATALOG",
            "FILE",
            "-ASTREFCAT_NAME",
            str(reference),
            "-SOLVE_PHOTOM",
            "N",
            "-DISTORT_DEGREES",
            "1",
            "-MOSAIC_TYPE",
            "UNCHANGED",
            "-CHECKPLOT_TYPE",
            "NONE",
            "-WRITE_XML",
            "N",
            "-VERBOSE_TYPE",
            "QUIET",
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    solved = _scamp_headers(tmp_path / "811001p.head")
    assert len(solved) == spec.ccds
    with fits.open(image) as hdul, fits.open(truth_path(image)) as truth:
        sources = truth["SOURCES"].data
        for index in range(spec.ccds):
            mine = sources[(sources["CCD"] == index) & (sources["MAG"] < 21)]
            true = SkyCoord(mine["RA"], mine["DEC"], unit="deg")
            header = hdul[index + 1].header.copy()
            before = WCS(header).pixel_to_world(mine["X"] - 1, mine["Y"] - 1)
            header.update(solved[index])
            after = WCS(header).pixel_to_world(mine["X"] - 1, mine["Y"] - 1)
            assert np.median(before.separation(true).arcsec) > 3.0
            assert np.median(after.separation(true).arcsec) < 0.1

"""A co-add's zero point and completeness against the truth: the real SWarp, source-extractor
and psfex on synthetic exposures, ``spica stack inject`` as a unit runs it.

Three exposures of two MegaCam CCDs (2048 px square cut-outs at the native scale, headers
exact) are co-added on a tile holding both CCDs and the gap between them (pixels without
weight). A bright sky makes the co-add shallow enough that the synthetic sky's own stars
(denser than the default sky, for counts) reach well past its limit, so its TRUE
completeness can be read from the truth tables: the fraction of those stars source-extractor
found. Targets: zero point within 0.05 mag of the exposures' own; completeness from
injected stars within 0.3 mag of the true one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from spica_core.resources import astromatic_dir
from spica_core.stacking.completeness import (
    CompletenessFailed,
    completeness,
    completeness_curve,
    injected_truth,
    nearest,
    recovery_curve,
    zero_point,
)
from spica_core.stacking.outputs import StackOutputs
from spica_core.synth import observing
from spica_core.synth.layout import NATIVE_SCALE, ExposureSpec
from spica_core.synth.refcat import write_reference_catalogue
from spica_core.synth.render import header_wcs
from spica_core.synth.sky import SkyModel
from spica_core.synth.truth import truth_path, write_sky_exposure
from tests.conftest import invoke_spica, require, run_spica

TOOLS = ("SWarp", "source-extractor", "psfex")
STACK = "CFHTLS_D_r_022720-072330_T0003"
#: CCD cut-outs, their centres' distance on the sky (pixels) and a margin around the tile.
SIDE, CCD_STEP, MARGIN = 2048, 2118, 30
SKY = SkyModel(seed=2003, star_density=80000.0)


@dataclass(frozen=True)
class Built:
    root: Path
    out: StackOutputs
    specs: list[ExposureSpec]
    exposures: list[Path]
    refcat: Path
    coadd_digest: str
    fwhm_px: float
    inject: subprocess.CompletedProcess[str]


def _spec(i: int) -> ExposureSpec:
    return ExposureSpec(
        filename=f"81100{i}p", runid="03AQ01", qrunid="03AQ01", filter="r.MP9601",
        object="w1.+0+0", ra_deg=34.5 + 2.0 * i / 3600, dec_deg=-7.0 + 1.5 * i / 3600,
        exptime=30.0, start=datetime(2003, 2, 3, 8, i, tzinfo=UTC), airmass=1.2,
        ccd_shape=(SIDE, SIDE), ccds=2, pixel_scale=NATIVE_SCALE, fwhm=0.8 + 0.05 * i,
        pointing_error=(0.0, 0.0), sky=3000.0,
    )  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sextractor(image: Path, weight: Path, catalog: Path) -> None:
    config = astromatic_dir()
    subprocess.run(
        [
            "source-extractor", str(image),
            "-c", str(config / "qfin.sex"),
            "-PARAMETERS_NAME", str(config / "qfin.param"),
            "-FILTER_NAME", str(config / "qfin.conv"),
            "-STARNNW_NAME", str(config / "qfin.nnw"),
            "-CATALOG_NAME", str(catalog),
            "-WEIGHT_TYPE", "MAP_WEIGHT",
            "-WEIGHT_IMAGE", str(weight),
            "-FLAG_IMAGE", "",
            "-WRITE_XML", "N",
        ],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    require(
        not missing,
        f"{' and '.join(missing)} not installed (./run setup installs them as root; or "
        "apt-get install swarp source-extractor psfex)",
    )
    root = tmp_path_factory.mktemp("completeness")
    specs = [_spec(i) for i in range(3)]
    exposures = [
        write_sky_exposure(s, root / "raw", "fits", sky=SKY, truth_dir=root / "truth")
        for s in specs
    ]
    centres = [
        header_wcs(specs[0], i).wcs_pix2world([[(SIDE + 1) / 2, (SIDE + 1) / 2]], 1)[0]
        for i in range(2)
    ]
    ra, dec = (float(v) for v in np.mean(centres, axis=0))
    out = StackOutputs(root / "stack", STACK)
    out.workdir.mkdir()
    subprocess.run(
        [
            "SWarp", *map(str, exposures),
            "-IMAGEOUT_NAME", str(out.coadd),
            "-WEIGHTOUT_NAME", str(out.coadd_weight),
            "-CENTER_TYPE", "MANUAL", "-CENTER", f"{ra},{dec}",
            "-PIXELSCALE_TYPE", "MANUAL", "-PIXEL_SCALE", str(NATIVE_SCALE),
            "-IMAGE_SIZE", f"{CCD_STEP + SIDE + 2 * MARGIN},{SIDE + 2 * MARGIN}",
            "-COMBINE_TYPE", "WEIGHTED",
            "-RESAMPLE_DIR", str(out.workdir),
            "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET", "-NTHREADS", "1",
        ],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    _sextractor(out.coadd, out.coadd_weight, out.catalog)
    config = astromatic_dir()
    subprocess.run(
        [
            "psfex", str(out.catalog), "-c", str(config / "qfin.psfex"),
            "-PSF_DIR", str(out.workdir), "-XML_NAME", str(out.psfex_xml),
            "-OUTCAT_TYPE", "NONE", "-CHECKPLOT_TYPE", "NONE",
        ],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    refcat = write_reference_catalogue(
        root / "ref.ldac", (ra, dec), 0.3, sky=SKY, mag_limits=(14.0, 24.0)
    )
    digest = _digest(out.coadd)
    inject = run_spica(
        "stack", "inject", STACK, "--workdir", str(out.workdir), "--refcat", str(refcat),
        timeout=600,
    )  # fmt: skip
    if inject.returncode == 0:
        _sextractor(out.inject_image, out.coadd_weight, out.inject_catalog)
    fwhm_px = float(fits.getheader(out.inject_truth, "INJECTED")["FWHM_PX"])
    return Built(root, out, specs, exposures, refcat, digest, fwhm_px, inject)


def _ok(built: Built) -> None:
    assert built.inject.returncode == 0, built.inject.stderr


def true_completeness(built: Built, fraction: float = 0.8) -> tuple[float, int]:
    """The magnitude where ``fraction`` of the sky's own stars on the co-add's fully covered
    pixels are in its catalogue (0.25 mag bins, first crossing, linear): owes nothing to
    the injection, its zero point or its curve."""
    stars = []
    for exposure in built.exposures:
        table = fits.getdata(truth_path(exposure, built.root / "truth"), "SOURCES")
        stars.append(table[table["KIND"] == "star"])
    ra = np.concatenate([s["RA"] for s in stars])
    dec = np.concatenate([s["DEC"] for s in stars])
    mag = np.concatenate([s["MAG"] for s in stars])
    _, unique = np.unique(np.round(ra * 1e6) * 1e7 + np.round(dec * 1e6), return_index=True)
    ra, dec, mag = ra[unique], dec[unique], mag[unique]
    weight = fits.getdata(built.out.coadd_weight)
    x, y = WCS(fits.getheader(built.out.coadd)).wcs_world2pix(ra, dec, 0)
    ny, nx = weight.shape
    inside = (x > 10) & (y > 10) & (x < nx - 11) & (y < ny - 11)
    x, y, mag = x[inside], y[inside], mag[inside]
    full = weight[np.rint(y).astype(int), np.rint(x).astype(int)] > 0.9 * weight.max()
    x, y, mag = x[full], y[full], mag[full]
    catalog = fits.getdata(built.out.catalog, "LDAC_OBJECTS")
    found = nearest(x + 1, y + 1, catalog["X_IMAGE"], catalog["Y_IMAGE"], built.fwhm_px) >= 0
    edges = np.arange(mag.min(), mag.max() + 0.25, 0.25)
    centres, recovered = [], []
    for low, high in itertools.pairwise(edges):
        in_bin = (mag >= low) & (mag < high)
        if in_bin.sum() >= 10:
            centres.append((low + high) / 2)
            recovered.append(found[in_bin].mean())
    for i in range(1, len(centres)):
        if recovered[i] < fraction <= recovered[i - 1]:
            step = (recovered[i - 1] - fraction) / (recovered[i - 1] - recovered[i])
            return centres[i - 1] + step * (centres[i] - centres[i - 1]), len(mag)
    raise AssertionError(f"the sky's stars never cross {fraction}: {recovered}")


def test_zero_point_against_the_exposures(built: Built) -> None:
    _ok(built)
    truth = observing.zero_point(built.specs[0])
    assert all(observing.zero_point(s) == truth for s in built.specs)
    injected = injected_truth(built.out.inject_truth)
    assert injected.zero_point_stars >= 50
    assert abs(injected.zero_point - truth) < 0.05, (injected.zero_point, truth)
    # Kron fluxes alone miss the wings: the correction is what brings it to the truth.
    uncorrected, _ = zero_point(built.out.catalog, built.refcat)
    assert uncorrected < injected.zero_point
    print(
        f"\nzero point {injected.zero_point:.4f} (Kron only {uncorrected:.4f}), "
        f"truth {truth:.4f}, {injected.zero_point_stars} reference stars"
    )


def test_injected_completeness_against_the_true_one(built: Built) -> None:
    _ok(built)
    injected = completeness(built.out.inject_truth, built.out.inject_catalog)
    curve = completeness_curve(built.out.inject_truth, built.out.inject_catalog)
    true, stars = true_completeness(built)
    assert injected is not None, curve.reason
    assert curve.magnitude == injected
    assert abs(injected - true) < 0.3, (injected, true)
    summary = injected_truth(built.out.inject_truth)
    assert summary.stars >= 1000
    assert summary.seeing == pytest.approx(0.85, abs=0.05)
    # The table's sky positions are its pixels through the co-add's WCS.
    table = fits.getdata(built.out.inject_truth, "INJECTED")
    assert len(table) == summary.stars
    x, y = WCS(fits.getheader(built.out.coadd)).wcs_world2pix(table["RA"], table["DEC"], 1)
    assert np.allclose(x, table["X"], atol=1e-3) and np.allclose(y, table["Y"], atol=1e-3)
    # The whole curve, not one point of it: where half are found agrees as well.
    half = completeness(built.out.inject_truth, built.out.inject_catalog, fraction=0.5)
    true_half, _ = true_completeness(built, fraction=0.5)
    assert half is not None and half > injected and abs(half - true_half) < 0.3
    # The bright end all found, the faint end none: the curve falls through inside the range.
    assert curve.bins[0][3] > 0.95 and curve.bins[-1][3] < 0.1
    print(
        f"\ncompleteness 80%: injected {injected:.3f}, true {true:.3f}; 50%: injected "
        f"{half:.3f}, true {true_half:.3f} ({stars} sky stars, {summary.stars} injected)"
    )


def test_the_record_reads_the_injection_without_astropy(built: Built) -> None:
    """``spica stack record`` calls these in a fresh process on the node: cfitsio only."""
    _ok(built)
    truth, catalog = built.out.inject_truth, built.out.inject_catalog
    code = (
        "import json, sys\nfrom pathlib import Path\n"
        "from spica_core.stacking.completeness import completeness, injected_truth\n"
        f"m = completeness(Path({str(truth)!r}), Path({str(catalog)!r}))\n"
        f"t = injected_truth(Path({str(truth)!r}))\n"
        "print(json.dumps([m, t.zero_point, 'astropy' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    shown = json.loads(done.stdout)
    assert shown == [
        completeness(truth, catalog),
        injected_truth(truth).zero_point,
        False,
    ]


def test_injection_leaves_the_coadd_as_it_was(built: Built) -> None:
    _ok(built)
    assert _digest(built.out.coadd) == built.coadd_digest
    with fits.open(built.out.coadd) as a, fits.open(built.out.inject_image) as b:
        assert a[0].header == b[0].header
        added = b[0].data.astype(float) - a[0].data
    truth = fits.getdata(built.out.inject_truth, "INJECTED")
    # The stars' light, all of it within their stamps, and nothing anywhere else.
    assert added.sum() == pytest.approx(truth["FLUX"].sum(), rel=0.01)
    weight = fits.getdata(built.out.coadd_weight)
    assert not added[weight == 0].any()
    far = np.ones(added.shape, dtype=bool)
    half = int(np.ceil(4 * built.fwhm_px)) + 3
    columns, rows = np.rint(truth["X"] - 1).astype(int), np.rint(truth["Y"] - 1).astype(int)
    for x, y in zip(columns, rows, strict=True):
        far[max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1] = False
    assert not added[far].any()
    # Clear of the co-add's own sources.
    catalog = fits.getdata(built.out.catalog, "LDAC_OBJECTS")
    close = nearest(truth["X"], truth["Y"], catalog["X_IMAGE"], catalog["Y_IMAGE"], 3 * 4.0)
    assert (close < 0).all()


def test_same_stack_same_stars(built: Built, tmp_path: Path) -> None:
    _ok(built)
    copy = StackOutputs(tmp_path, STACK)
    for name in ("coadd", "coadd_weight", "catalog", "psfex_xml"):
        shutil.copyfile(getattr(built.out, name), getattr(copy, name))
    again = invoke_spica(
        "stack", "inject", STACK, "--workdir", str(tmp_path), "--refcat", str(built.refcat),
        "--json",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    shown = json.loads(again.stdout)
    assert shown["injected"] == injected_truth(copy.inject_truth).stars
    assert shown["zero_point"] == injected_truth(built.out.inject_truth).zero_point
    first = fits.getdata(built.out.inject_truth, "INJECTED")
    second = fits.getdata(copy.inject_truth, "INJECTED")
    assert np.array_equal(first["X"], second["X"]) and np.array_equal(first["MAG"], second["MAG"])


def test_bad_inputs_named(built: Built, tmp_path: Path) -> None:
    _ok(built)
    out = StackOutputs(tmp_path, STACK)

    def inject(refcat: Path = built.refcat) -> subprocess.CompletedProcess[str]:
        return invoke_spica(
            "stack", "inject", STACK, "--workdir", str(tmp_path), "--refcat", str(refcat)
        )

    done = inject()
    assert done.returncode == 1 and f"PSFEx's XML {out.psfex_xml} is missing" in done.stderr
    shutil.copyfile(built.out.psfex_xml, out.psfex_xml)
    done = inject()
    assert done.returncode == 1 and f"co-add catalogue {out.catalog} is missing" in done.stderr
    shutil.copyfile(built.out.catalog, out.catalog)
    elsewhere = write_reference_catalogue(tmp_path / "far.ldac", (200.0, 30.0), 0.05)
    done = inject(elsewhere)
    assert done.returncode == 1
    assert f"match reference catalogue {elsewhere}" in done.stderr, done.stderr
    done = inject(built.exposures[0])
    assert done.returncode == 1 and "has no LDAC_OBJECTS table" in done.stderr
    done = inject()
    assert done.returncode == 1 and f"co-add {out.coadd} is missing" in done.stderr
    assert not out.inject_image.exists() and not out.inject_truth.exists()
    out.coadd.write_bytes(b"SIMPLE  = F")
    shutil.copyfile(built.out.coadd_weight, out.coadd_weight)
    done = inject()
    assert done.returncode == 1 and str(out.coadd) in done.stderr
    assert not out.inject_image.exists()
    with fits.open(built.out.coadd) as hdus:
        header = hdus[0].header.copy()
        header["BITPIX"] = 32
        fits.PrimaryHDU(np.rint(hdus[0].data).astype(np.int32), header).writeto(
            out.coadd, overwrite=True
        )
    done = inject()
    assert done.returncode == 1, done.stderr
    assert f"co-add {out.coadd} is not an image of floating-point pixels" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if "inject" in p.name) == []
    with pytest.raises(CompletenessFailed, match=r"injected stars' table .* is missing"):
        completeness(tmp_path / "none.fits", built.out.inject_catalog)
    with pytest.raises(CompletenessFailed, match=r"injected copy's catalogue .* is missing"):
        completeness(built.out.inject_truth, tmp_path / "none.cat")


def test_recovery_curve_edges() -> None:
    mag = np.linspace(18.0, 24.0, 600)
    step = recovery_curve(mag, mag < 22.0)
    assert step.magnitude is not None and abs(step.magnitude - 22.0) < 0.2
    # Noise making the recovered fraction rise again does not make two crossings.
    found = (mag < 21.0) | ((mag > 21.5) & (mag < 21.6))
    assert recovery_curve(mag, found).magnitude == pytest.approx(21.0, abs=0.2)
    everything = recovery_curve(mag, np.ones(len(mag), dtype=bool))
    assert everything.magnitude is None and "down to the faintest" in (everything.reason or "")
    nothing = recovery_curve(mag, np.zeros(len(mag), dtype=bool))
    assert nothing.magnitude is None and "at the brightest" in (nothing.reason or "")
    few = recovery_curve(mag[:5], mag[:5] < 20)
    assert few.magnitude is None and "5 stars injected" in (few.reason or "")
    smooth = [b[3] for b in recovery_curve(mag, found).bins]
    assert all(a >= b for a, b in itertools.pairwise(smooth))

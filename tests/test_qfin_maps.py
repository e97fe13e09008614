"""QFin's first line: the image checked, its weight and flag maps written, or a clear failure."""

from __future__ import annotations

import gzip
import math
import subprocess
import sys
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from spica_core.qfin.maps import FLAG_NONFINITE, FLAG_SATURATED, FLAG_ZERO, write_maps
from spica_core.qfin.measure import QfinFailed, report_path
from spica_core.synth.layout import ExposureSpec
from spica_core.synth.writer import Container, exposure_hdus, noise_pixels, write_exposure

SATURATE = 60000.0


def _spec(name: str = "811001p") -> ExposureSpec:
    return ExposureSpec(
        filename=name, runid="03AQ01", qrunid="03AQ01", filter="r.MP9601", object="w1.+0+0",
        ra_deg=34.5, dec_deg=-7.0, exptime=300.0, start=datetime(2003, 2, 3, 8, tzinfo=UTC),
        airmass=1.2, ccd_shape=(64, 48), ccds=3, saturate=SATURATE,
    )  # fmt: skip


def _pixels(spec: ExposureSpec, index: int) -> np.ndarray:
    """Noise, with a saturated and a zero pixel on CCD 1."""
    data = noise_pixels(spec, index)
    if index == 1:
        data[10, 20] = int(SATURATE)
        data[30, 5] = 0
    return data


def _write(tmp_path: Path, container: Container = "fits") -> Path:
    return write_exposure(_spec(), tmp_path / "raid", container, _pixels)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize("container", ["fits", "fits.gz", "fits.fz"])
def test_maps_mark_saturated_and_zero_pixels(tmp_path: Path, container: Container) -> None:
    image = _write(tmp_path, container)
    workdir = tmp_path / "qfin" / "T0001" / "811001p"
    maps = write_maps(image, workdir, image="811001p")
    with fits.open(maps.weight) as weight, fits.open(maps.flag) as flag:
        weight.verify("exception")
        flag.verify("exception")
        assert len(weight) == len(flag) == 4
        assert [h.header["EXTNAME"] for h in weight[1:]] == ["ccd00", "ccd01", "ccd02"]
        assert flag[2].data[10, 20] == FLAG_SATURATED
        assert flag[2].data[30, 5] == FLAG_ZERO
        assert np.count_nonzero(flag[2].data) == 2
        assert np.count_nonzero(flag[1].data) == np.count_nonzero(flag[3].data) == 0
        assert weight[2].data[10, 20] == weight[2].data[30, 5] == 0.0
        assert np.count_nonzero(weight[2].data == 0) == 2
        assert np.all(weight[1].data == 1.0)
        assert weight[1].data.shape == (64, 48)
    if container == "fits":
        assert maps.sextractor_input == image
    else:
        assert maps.sextractor_input == workdir / "811001p.fits"
        with fits.open(maps.sextractor_input) as plain, fits.open(image) as packed:
            assert plain[0].header["FILENAME"] == "811001p"
            for ccd in (1, 2, 3):
                assert np.array_equal(plain[ccd].data, packed[ccd].data)
                assert plain[ccd].header["CRPIX1"] == packed[ccd].header["CRPIX1"]
    assert not [n for n in _names(workdir) if n.endswith(".tmp")]


def test_non_finite_pixels_are_flagged(tmp_path: Path) -> None:
    hdus = exposure_hdus(_spec(), "fits", _pixels)
    data = hdus[3].data.astype(np.float32)
    data[5, 6] = np.nan
    data[7, 8] = np.inf
    hdus[3] = fits.ImageHDU(data, hdus[3].header)
    path = tmp_path / "811001p.fits"
    hdus.writeto(path)
    maps = write_maps(path, tmp_path / "q", image="811001p")
    flag = fits.getdata(maps.flag, 3)
    assert flag[5, 6] == flag[7, 8] == FLAG_NONFINITE
    assert fits.getdata(maps.weight, 3)[5, 6] == 0.0


def _expect_failure(path: Path, workdir: Path, *fragments: str) -> None:
    with pytest.raises(QfinFailed) as caught:
        write_maps(path, workdir, image="811001p")
    message = str(caught.value)
    assert "\n" not in message
    for fragment in ("image 811001p", *fragments):
        assert fragment in message, message
    assert not [n for n in _names(workdir) if not n.startswith("old")], _names(workdir)


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_plain_fits(tmp_path: Path, cut: float) -> None:
    image = _write(tmp_path)
    data = image.read_bytes()
    image.write_bytes(data[: int(len(data) * cut)])
    _expect_failure(image, tmp_path / "q", "truncated", str(image))


def test_truncated_at_a_block_boundary(tmp_path: Path) -> None:
    image = _write(tmp_path)
    data = image.read_bytes()
    image.write_bytes(data[: (len(data) // 2880 - 1) * 2880])
    _expect_failure(image, tmp_path / "q", "truncated")


def test_truncated_gzip(tmp_path: Path) -> None:
    image = _write(tmp_path, "fits.gz")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    _expect_failure(image, tmp_path / "q", str(image))


def test_not_fits(tmp_path: Path) -> None:
    image = tmp_path / "811001p.fits"
    image.write_bytes(b"SIMPLE? no, a text file\n" * 120)
    _expect_failure(image, tmp_path / "q", "not a FITS file")
    with pytest.raises(QfinFailed, match="does not exist"):
        write_maps(tmp_path / "absent.fits", tmp_path / "q", image="811001p")


def test_a_ccd_all_zeros(tmp_path: Path) -> None:
    def pixels(spec: ExposureSpec, index: int) -> np.ndarray:
        data = noise_pixels(spec, index)
        return data * 0 if index == 2 else data

    image = write_exposure(_spec(), tmp_path, "fits.fz", pixels)
    _expect_failure(image, tmp_path / "q", "CCD ccd02 (extension 3)", "all zeros")


def _with_ccd2_header(tmp_path: Path, change: dict[str, float | str | None]) -> Path:
    """An exposure whose second CCD's header has ``change`` (None removes the card)."""
    hdus = exposure_hdus(_spec(), "fits")
    for key, value in change.items():
        if value is None:
            del hdus[2].header[key]
        else:
            hdus[2].header[key] = value
    image = tmp_path / "811001p.fits"
    hdus.writeto(image)
    return image


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"CTYPE1": None, "CTYPE2": None}, "no usable celestial WCS"),
        ({"CD1_1": 0.0, "CD1_2": 0.0}, "no usable celestial WCS"),
        ({"CD1_1": 1.0, "CD2_2": 1.0}, "pixel scale"),
        ({"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ"}, "unknown projection 'XYZ'"),
        ({"CTYPE2": "DEC--SIN"}, "not one projection of both axes"),
        ({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR"}, "not a longitude/latitude pair"),
        ({"CRVAL2": "minus seven"}, "CRVAL2 missing or not a finite number"),
        ({"CRPIX1": None}, "CRPIX1 missing"),
        ({"CD1_1": None, "CD1_2": None, "CD2_1": None, "CD2_2": None}, "no CDi_j"),
    ],
)
def test_a_ccd_without_usable_wcs(
    tmp_path: Path, change: dict[str, float | str | None], why: str
) -> None:
    image = _with_ccd2_header(tmp_path, change)
    _expect_failure(image, tmp_path / "q", "CCD ccd01 (extension 2)", why)


@pytest.mark.parametrize(
    "change",
    [
        {
            "CD1_1": None,
            "CD1_2": None,
            "CD2_1": None,
            "CD2_2": None,
            "CDELT1": -5.2e-5,
            "CDELT2": 5.2e-5,
        },
        {
            "CD1_1": None,
            "CD1_2": None,
            "CD2_1": None,
            "CD2_2": None,
            "CDELT1": 5.2e-5,
            "CDELT2": 5.2e-5,
            "PC1_1": -1.0,
            "PC2_2": 1.0,
        },
        {"CTYPE1": "DEC--TAN", "CTYPE2": "RA---TAN"},
        {"CTYPE1": "GLON-TPV", "CTYPE2": "GLAT-TPV"},
    ],
)
def test_other_usable_wcs_forms_are_accepted(
    tmp_path: Path, change: dict[str, float | str | None]
) -> None:
    image = _with_ccd2_header(tmp_path, change)
    assert write_maps(image, tmp_path / "q", image="811001p").weight.is_file()


def test_stale_outputs_of_an_earlier_run_are_removed(tmp_path: Path) -> None:
    """A rerun never lets a later line read a previous attempt's files, nor leaves its
    report behind when the image is now broken."""
    image = _write(tmp_path)
    workdir = tmp_path / "q"
    workdir.mkdir()
    stale = [report_path(workdir, "811001p"), workdir / "811001p.cat", workdir / "811001p.psf"]
    for path in stale:
        path.write_text("old")
    (workdir / "old-notes.txt").write_text("kept: not QFin's")
    image.write_bytes(gzip.compress(b"x")[:-3])  # now broken
    _expect_failure(image, workdir, "not a FITS file")
    assert _names(workdir) == ["old-notes.txt"]


@pytest.mark.parametrize("container", ["fits", "fits.gz", "fits.fz"])
def test_one_ccd_at_a_time_in_memory(tmp_path: Path, container: Container) -> None:
    """The maps stream: the peak of memory allocated while a 16-CCD exposure is checked,
    mapped and unpacked stays within a few CCDs' pixels, far below the exposure's."""
    spec = replace(_spec(), ccd_shape=(1024, 512), ccds=16)
    image = write_exposure(spec, tmp_path / "raid", container)
    ccd_bytes = 1024 * 512 * 2
    tracemalloc.start()
    try:
        maps = write_maps(image, tmp_path / "q", image="811001p")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * ccd_bytes, f"peak {peak / 1e6:.1f} MB for {ccd_bytes / 1e6:.1f} MB CCDs"
    with fits.open(maps.flag) as flag, fits.open(maps.sextractor_input) as plain:
        assert len(flag) == len(plain) == 17
        assert np.array_equal(plain[16].data, noise_pixels(spec, 15))


def test_maps_do_not_import_astropy(tmp_path: Path) -> None:
    """Every QFin unit starts with this line, in a fresh process: it reads and writes FITS
    through cfitsio and its own header cards, never paying astropy's import."""
    image = _write(tmp_path, "fits.fz")
    code = (
        "import sys\nfrom pathlib import Path\nfrom spica_core.qfin.maps import write_maps\n"
        f"write_maps(Path({str(image)!r}), Path({str(tmp_path / 'q')!r}), image='811001p')\n"
        "print('astropy' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    with fits.open(tmp_path / "q" / "811001p.fits") as plain:
        plain.verify("exception")


@pytest.mark.parametrize(
    ("dtype", "saturate"), [(np.uint16, SATURATE), (np.int16, 3000.5), (np.int32, 3000.0)]
)
def test_flags_at_the_saturation_edge_in_the_stored_scale(
    tmp_path: Path, dtype: type, saturate: float
) -> None:
    """Unsigned 16-bit pixels (stored with BZERO 32768) and signed ones are flagged on their
    physical value: one below SATURATE is good, SATURATE (rounded up) and above are not."""
    hdus = exposure_hdus(_spec(), "fits", _pixels)
    edge = math.ceil(saturate)
    data = hdus[1].data.astype(dtype)
    data[1, 1], data[2, 2], data[3, 3], data[4, 4] = edge - 1, edge, edge + 1, 0
    hdus[1] = fits.ImageHDU(data, hdus[1].header)
    hdus[1].header["SATURATE"] = saturate
    path = tmp_path / "811001p.fits"
    hdus.writeto(path)
    flag = fits.getdata(write_maps(path, tmp_path / "q", image="811001p").flag, 1)
    assert (flag[1, 1], flag[2, 2], flag[3, 3], flag[4, 4]) == (0, 1, 1, FLAG_ZERO)
    assert np.count_nonzero(flag) == 3

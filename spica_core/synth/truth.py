"""The truth beside a synthetic exposure: what was drawn, for tests and benchmarks to compare
SPICA's measures with.

``<image>.truth.fits`` (``811001p.truth.fits`` beside ``811001p.fits.fz``): a primary header
with the exposure's injected conditions, a ``SOURCES`` table (one row per source and CCD whose
centre falls on it) and a ``CCDS`` table (per CCD: gain, sky, saturation, true and header
CRVAL). Written atomically; read it with ``astropy.io.fits``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spica_core.ingest.fitsscan import image_filename
from spica_core.synth import observing
from spica_core.synth.layout import ExposureSpec
from spica_core.synth.render import CcdTruth, SkyPixels
from spica_core.synth.sky import KINDS, SKY, SkyModel
from spica_core.synth.writer import Container, hdus_bytes, replace_file, write_exposure

if TYPE_CHECKING:
    from astropy.io import fits

SUFFIX = ".truth.fits"


def truth_path(
    image: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None
) -> Path:
    """``<directory or the image's>/<filename>.truth.fits`` for an exposure's path."""
    path = Path(image)
    stem = image_filename(path.name) or path.name
    return Path(directory if directory is not None else path.parent) / f"{stem}{SUFFIX}"


def truth_hdus(spec: ExposureSpec, truths: list[CcdTruth]) -> fits.HDUList:
    """The truth as HDUs (see the module's docstring)."""
    from astropy.io import fits

    true_ra, true_dec = observing.true_pointing(spec)
    east, north = observing.pointing_error(spec)
    primary = fits.PrimaryHDU()
    primary.header.extend(
        [
            ("FILENAME", spec.filename, "Exposure"),
            ("FILTER", spec.filter, "Filter"),
            ("EXPTIME", spec.exptime, "Integration time (s)"),
            ("AIRMASS", spec.airmass, "Airmass"),
            ("FWHM", observing.seeing(spec), "Injected PSF FWHM (arcsec)"),
            ("BETA", spec.beta, "Injected Moffat beta"),
            ("ELONGATN", spec.elongation, "Injected PSF axis ratio (A/B)"),
            ("PSFANGLE", spec.psf_angle, "PSF major axis (deg east of north)"),
            ("PIXSCALE", spec.pixel_scale or 0.0, "Pixel scale (arcsec/pixel)"),
            ("SKY", observing.sky_level(spec), "Injected sky background (ADU/pixel)"),
            ("GAIN", spec.gain(0), "Gain of the first CCD (e-/ADU; CCDS has all)"),
            ("RDNOISE", spec.read_noise, "Read noise (e-)"),
            ("SATURATE", spec.saturate, "Saturation level (ADU)"),
            ("ZP", observing.zero_point(spec), "Magnitude of 1 ADU in the exposure"),
            ("TRUE_RA", true_ra, "True pointing, RA (deg)"),
            ("TRUE_DEC", true_dec, "True pointing, Dec (deg)"),
            ("HDR_RA", spec.ra_deg, "Pointing in the headers (CRVAL1, deg)"),
            ("HDR_DEC", spec.dec_deg, "Pointing in the headers (CRVAL2, deg)"),
            ("PNT_DE", east, "Header minus true pointing, east (arcsec)"),
            ("PNT_DN", north, "Header minus true pointing, north (arcsec)"),
        ]
    )
    if truths:
        ccd = np.concatenate([np.full(len(t.x), t.index, dtype=np.int16) for t in truths])
        columns = {
            name: np.concatenate([getter(t) for t in truths])
            for name, getter in _SOURCE_COLUMNS.items()
        }
    else:
        ccd = np.zeros(0, dtype=np.int16)
        columns = {name: np.zeros(0) for name in _SOURCE_COLUMNS}
    kinds = np.array([KINDS[k] for k in columns.pop("KIND").astype(int)], dtype="U6")
    sources = fits.BinTableHDU.from_columns(
        [
            fits.Column("CCD", "I", array=ccd),
            fits.Column("EXTNAME", "5A", array=np.array([f"ccd{c:02d}" for c in ccd])),
            fits.Column("RA", "D", unit="deg", array=columns["RA"]),
            fits.Column("DEC", "D", unit="deg", array=columns["DEC"]),
            fits.Column("X", "D", unit="pixel", array=columns["X"]),
            fits.Column("Y", "D", unit="pixel", array=columns["Y"]),
            fits.Column("MAG", "E", unit="mag", array=columns["MAG"]),
            fits.Column("FLUX", "E", unit="adu", array=columns["FLUX"]),
            fits.Column("KIND", "6A", array=kinds),
            fits.Column("SATURATED", "L", array=columns["SATURATED"].astype(bool)),
            fits.Column("RADIUS", "E", unit="arcsec", array=columns["RADIUS"]),
        ],
        name="SOURCES",
    )
    header_ra, header_dec = spec.ra_deg, spec.dec_deg
    ccds = fits.BinTableHDU.from_columns(
        [
            fits.Column("CCD", "I", array=np.array([t.index for t in truths], dtype=np.int16)),
            fits.Column("GAIN", "E", array=np.array([t.gain for t in truths])),
            fits.Column("SKY", "E", array=np.array([t.sky for t in truths])),
            fits.Column("SATURATE", "E", array=np.full(len(truths), spec.saturate)),
            fits.Column("SOURCES", "J", array=np.array([len(t.x) for t in truths])),
            fits.Column("DEAD", "L", array=np.array([t.index in spec.dead_ccds for t in truths])),
            fits.Column("TRUE_CRVAL1", "D", array=np.full(len(truths), true_ra)),
            fits.Column("TRUE_CRVAL2", "D", array=np.full(len(truths), true_dec)),
            fits.Column("HDR_CRVAL1", "D", array=np.full(len(truths), header_ra)),
            fits.Column("HDR_CRVAL2", "D", array=np.full(len(truths), header_dec)),
        ],
        name="CCDS",
    )
    return fits.HDUList([primary, sources, ccds])


_SOURCE_COLUMNS: dict[str, Callable[[CcdTruth], np.ndarray]] = {
    "RA": lambda t: t.sources.ra,
    "DEC": lambda t: t.sources.dec,
    "X": lambda t: t.x,
    "Y": lambda t: t.y,
    "MAG": lambda t: t.sources.mag,
    "FLUX": lambda t: t.flux,
    "KIND": lambda t: t.sources.kind,
    "SATURATED": lambda t: t.saturated,
    "RADIUS": lambda t: t.sources.radius,
}


def write_truth(path: str | os.PathLike[str], spec: ExposureSpec, truths: list[CcdTruth]) -> Path:
    """Write the truth table to ``path`` atomically and return it."""
    return replace_file(path, hdus_bytes(truth_hdus(spec, truths)))


def write_sky_exposure(
    spec: ExposureSpec,
    directory: str | os.PathLike[str],
    container: Container = "fits.fz",
    *,
    sky: SkyModel = SKY,
    truth_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the exposure drawn from ``sky`` and its truth (beside it, or in ``truth_dir``:
    a repository that ingestion walks should not hold ``.fits`` tables); the image's path.
    Copied out of :mod:`spica_core.synth.cache` when ``$SPICA_SYNTH_CACHE`` holds them."""
    from spica_core.synth.cache import IMAGE, TRUTH, SynthCache, entry_key

    path = Path(directory) / f"{spec.filename}.{container}"
    files = {IMAGE: path, TRUTH: truth_path(path, truth_dir)}
    cache = SynthCache.from_env()
    key = entry_key(spec, container, sky) if cache is not None else None
    if cache is not None and key is not None and cache.restore(key, files):
        return path
    pixels = SkyPixels(sky)
    write_exposure(spec, directory, container, pixels)
    write_truth(files[TRUTH], spec, pixels.truth(spec))
    if cache is not None and key is not None:
        cache.store(key, files)
    return path

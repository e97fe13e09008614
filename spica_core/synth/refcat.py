"""An astrometric reference catalogue of the synthetic sky, as SCAMP reads one offline.

``scamp ... -ASTREF_CATALOG FILE -ASTREFCAT_NAME ref.ldac`` wants a FITS_LDAC file: an empty
primary HDU, an ``LDAC_IMHEAD`` table whose single ``Field Header Card`` cell holds an image
header's 80-column cards (SCAMP writes a dummy one with the field's WCS, as here), then an
``LDAC_OBJECTS`` table with the keys of SCAMP's ``ASTREF*_KEYS`` defaults: ``X_WORLD``,
``Y_WORLD`` (deg, double), ``ERRA_WORLD``, ``ERRB_WORLD`` (deg), ``ERRTHETA_WORLD`` (deg),
``MAG``, ``MAGERR``, ``OBSDATE`` (epoch in years) and ``FLAGS``. The stars are the sky's
own (:mod:`.sky`), their positions and magnitudes scattered by errors that grow towards the
faint end as a survey's do, seeded so the same request gives the same bytes.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spica_core.synth.sky import SKY, STAR, SkyModel, sources_in
from spica_core.synth.writer import hdus_bytes, replace_file

if TYPE_CHECKING:
    from astropy.io import fits

#: Positional error (arcsec) of the brightest references, and where it doubles (mag).
POSITION_FLOOR = 0.03
POSITION_KNEE = 20.0
#: Magnitude error floor and the magnitude where it reaches 0.05 mag.
MAG_FLOOR = 0.01
MAG_KNEE = 21.5


@dataclass(frozen=True)
class Reference:
    """The catalogue's columns (numpy arrays), errors as 1-sigma."""

    ra: np.ndarray
    dec: np.ndarray
    #: Positional error per axis (arcsec).
    error: np.ndarray
    mag: np.ndarray
    magerr: np.ndarray
    obsdate: float


def position_error(mag: np.ndarray) -> np.ndarray:
    """Per-axis position error (arcsec): the floor, growing as the photon noise does."""
    return np.hypot(POSITION_FLOOR, POSITION_FLOOR * 10 ** (0.4 * (mag - POSITION_KNEE)))


def magnitude_error(mag: np.ndarray) -> np.ndarray:
    """Magnitude error: a calibration floor plus photon noise reaching 0.05 at the knee."""
    return np.hypot(MAG_FLOOR, 0.05 * 10 ** (0.4 * (mag - MAG_KNEE)))


def reference_stars(
    centre: tuple[float, float],
    radius: float,
    *,
    sky: SkyModel = SKY,
    mag_limits: tuple[float, float] = (16.0, 22.0),
    obsdate: float = 2000.0,
) -> Reference:
    """The sky's stars within ``radius`` degrees of ``centre`` (RA, Dec, deg) and in
    ``mag_limits``, as a survey measured them."""
    ra0, dec0 = centre
    cos_dec = max(math.cos(math.radians(dec0)), 1e-6)
    half_ra = min(180.0, radius / cos_dec)
    found = sources_in(sky, (ra0 - half_ra, ra0 + half_ra), (dec0 - radius, dec0 + radius))
    dra = ((found.ra - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.radians(found.dec))
    inside = np.hypot(dra, found.dec - dec0) <= radius
    inside &= (found.kind == STAR) & (found.mag >= mag_limits[0]) & (found.mag <= mag_limits[1])
    stars = found.take(inside)
    order = np.lexsort((stars.dec, stars.ra))
    stars = stars.take(order)
    request = f"{sky.seed}/{ra0:.6f}/{dec0:.6f}/{radius:.6f}/{obsdate}"
    rng = np.random.default_rng(zlib.crc32(request.encode()))
    error = position_error(stars.mag)
    magerr = magnitude_error(stars.mag)
    dec = stars.dec + rng.normal(0.0, 1.0, len(stars)) * error / 3600.0
    ra = stars.ra + rng.normal(0.0, 1.0, len(stars)) * error / 3600.0 / np.cos(
        np.radians(stars.dec)
    )
    mag = stars.mag + rng.normal(0.0, 1.0, len(stars)) * magerr
    return Reference(ra % 360.0, dec, error, mag, magerr, obsdate)


def _imhead_cards(centre: tuple[float, float], radius: float) -> str:
    """A dummy image header covering the region (SCAMP writes one like it), as card text."""
    from astropy.io import fits

    scale = 0.2 / 3600.0
    size = max(1, math.ceil(2 * radius / scale))
    header = fits.Header(
        [
            ("SIMPLE", True, ""),
            ("BITPIX", 0, ""),
            ("NAXIS", 2, ""),
            ("NAXIS1", size, ""),
            ("NAXIS2", size, ""),
            ("EQUINOX", 2000.0, ""),
            ("RADESYS", "ICRS", ""),
            ("CTYPE1", "RA---STG", ""),
            ("CTYPE2", "DEC--STG", ""),
            ("CRVAL1", centre[0], ""),
            ("CRVAL2", centre[1], ""),
            ("CRPIX1", (size + 1) / 2, ""),
            ("CRPIX2", (size + 1) / 2, ""),
            ("CDELT1", -scale, ""),
            ("CDELT2", scale, ""),
        ]
    )
    return str(header.tostring(sep="", endcard=True, padding=False))


def reference_hdus(
    reference: Reference, centre: tuple[float, float], radius: float
) -> fits.HDUList:
    """The catalogue as FITS_LDAC HDUs (see the module's docstring)."""
    from astropy.io import fits

    text = _imhead_cards(centre, radius)
    cards = len(text) // 80
    imhead = fits.BinTableHDU.from_columns(
        [
            fits.Column(
                "Field Header Card",
                f"{80 * cards}A",
                dim=f"(80, {cards})",
                array=np.array([[text[i : i + 80] for i in range(0, len(text), 80)]]),
            )
        ],
        name="LDAC_IMHEAD",
    )
    degrees = reference.error / 3600.0
    n = len(reference.ra)
    objects = fits.BinTableHDU.from_columns(
        [
            fits.Column("X_WORLD", "D", unit="deg", array=reference.ra),
            fits.Column("Y_WORLD", "D", unit="deg", array=reference.dec),
            fits.Column("ERRA_WORLD", "E", unit="deg", array=degrees),
            fits.Column("ERRB_WORLD", "E", unit="deg", array=degrees),
            fits.Column("ERRTHETA_WORLD", "E", unit="deg", array=np.zeros(n)),
            fits.Column("MAG", "E", unit="mag", array=reference.mag),
            fits.Column("MAGERR", "E", unit="mag", array=reference.magerr),
            fits.Column("OBSDATE", "D", unit="yr", array=np.full(n, reference.obsdate)),
            fits.Column("FLAGS", "I", array=np.zeros(n, dtype=np.int16)),
        ],
        name="LDAC_OBJECTS",
    )
    return fits.HDUList([fits.PrimaryHDU(), imhead, objects])


def write_reference_catalogue(
    path: str | os.PathLike[str],
    centre: tuple[float, float],
    radius: float,
    *,
    sky: SkyModel = SKY,
    mag_limits: tuple[float, float] = (16.0, 22.0),
    obsdate: float = 2000.0,
) -> Path:
    """Write the FITS_LDAC reference catalogue of the sky's stars within ``radius`` degrees
    of ``centre`` (atomically) and return its path."""
    reference = reference_stars(centre, radius, sky=sky, mag_limits=mag_limits, obsdate=obsdate)
    return replace_file(path, hdus_bytes(reference_hdus(reference, centre, radius)))

"""An astrometric reference catalogue of the synthetic sky, as SCAMP reads one offline.

The FITS_LDAC file is the one SPICA writes for every release's catalogue
(:mod:`spica_core.stacking.refcat`). The stars are the sky's own (:mod:`.sky`), their
positions and magnitudes scattered by errors that grow towards the faint end as a survey's
do, seeded so the same request gives the same bytes.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np

from spica_core.stacking.refcat import Reference, write_ldac
from spica_core.synth.sky import SKY, STAR, SkyModel, sources_in

#: Positional error (arcsec) of the brightest references, and where it doubles (mag).
POSITION_FLOOR = 0.03
POSITION_KNEE = 20.0
#: Magnitude error floor and the magnitude where it reaches 0.05 mag.
MAG_FLOOR = 0.01
MAG_KNEE = 21.5


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
    return write_ldac(path, reference, centre, radius)

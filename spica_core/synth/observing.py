"""The night's conditions of a synthetic exposure: seeing, sky, photometry, pointing error.

What a spec leaves unset is drawn from its filename (a stable hash), so each exposure of a
runid has its own seeing and pointing error, the same on every run. Magnitudes become ADU
through the primary header's own PHOT_C / PHOT_K: a star of magnitude ``m`` at airmass ``X``
gives ``exptime * 10**(-0.4 * (m + PHOT_K * (X - 1) - PHOT_C))`` ADU in all.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from spica_core.synth.layout import PHOTOMETRY, ExposureSpec, ccd_geometry

#: Range of the default seeing (arcsec): Mauna Kea's good to poor nights.
SEEING_RANGE = (0.6, 1.4)
#: Largest default pointing error (arcsec): a telescope's blind pointing.
POINTING_ERROR = 4.0
#: Dark sky surface brightness per filter (mag / arcsec^2) at Mauna Kea.
SKY_BRIGHTNESS = {
    "u.MP9301": 22.7,
    "g.MP9401": 22.0,
    "r.MP9601": 21.0,
    "i.MP9701": 20.2,
    "i.MP9702": 20.2,
    "z.MP9801": 19.4,
}


def _uniform(spec: ExposureSpec, what: str) -> float:
    """A number in [0, 1) fixed by the exposure's name and ``what``."""
    return zlib.crc32(f"{spec.filename}/{what}".encode()) / 2**32


def seeing(spec: ExposureSpec) -> float:
    """The PSF's FWHM (arcsec): the spec's, or one drawn from the filename, skewed to good
    nights as Mauna Kea's are."""
    if spec.fwhm is not None:
        return spec.fwhm
    low, high = SEEING_RANGE
    return round(low + (high - low) * _uniform(spec, "seeing") ** 2, 3)


def pointing_error(spec: ExposureSpec) -> tuple[float, float]:
    """(east, north) arcsec from the true pointing to the one the headers report."""
    if spec.pointing_error is not None:
        return spec.pointing_error
    radius = POINTING_ERROR * math.sqrt(0.25 + 0.75 * _uniform(spec, "pointing-r"))
    angle = 2 * math.pi * _uniform(spec, "pointing-a")
    return round(radius * math.cos(angle), 3), round(radius * math.sin(angle), 3)


def true_pointing(spec: ExposureSpec) -> tuple[float, float]:
    """Where the telescope really pointed (deg): the header's pointing less its error."""
    east, north = pointing_error(spec)
    dec = spec.dec_deg - north / 3600.0
    ra = (spec.ra_deg - east / 3600.0 / math.cos(math.radians(dec))) % 360.0
    return ra, dec


def zero_point(spec: ExposureSpec) -> float:
    """The magnitude giving 1 ADU in the whole exposure, extinction included."""
    phot_c, phot_k = PHOTOMETRY.get(spec.filter, (26.0, 0.1))
    return phot_c + 2.5 * math.log10(spec.exptime) - phot_k * (spec.airmass - 1.0)


def flux_adu(spec: ExposureSpec, mag: np.ndarray) -> np.ndarray:
    """Total ADU of sources of magnitude ``mag`` in this exposure."""
    return np.power(10.0, -0.4 * (np.asarray(mag, dtype=float) - zero_point(spec)))


def pixel_scale(spec: ExposureSpec, index: int = 0) -> tuple[float, float]:
    """(x, y) arcsec / pixel of CCD ``index`` as written."""
    geom = ccd_geometry(index, spec.ccd_shape, spec.pixel_scale, spec.ccd_offsets)
    return geom.scale_x, geom.scale_y


def sky_level(spec: ExposureSpec, index: int = 0) -> float:
    """Sky background (ADU / pixel): the spec's, or the filter's dark sky."""
    if spec.sky is not None:
        return spec.sky
    scale_x, scale_y = pixel_scale(spec, index)
    brightness = SKY_BRIGHTNESS.get(spec.filter, 21.0)
    return float(flux_adu(spec, np.array(brightness))) * scale_x * scale_y

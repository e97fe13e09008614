"""Drawing point sources and galaxies into a CCD, integrated over each pixel.

A star is a Moffat profile ``I(r) ~ (1 + (r/alpha)**2)**-beta`` whose FWHM is the seeing,
integrated over every pixel of its stamp with a Gauss-Legendre rule (exact enough that a
pixel-integrated fit gives back the FWHM to far better than 1% down to ~3 pixels FWHM). A
galaxy is an elliptical exponential disc integrated over pixels (on a finer grid) and
convolved with the pixel-integrated PSF. Stamps are as large as the source's light above a
small fraction of an ADU needs, so a bright star's wings do not stop at a visible edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Gauss-Legendre nodes per pixel axis for stars; sub-pixels per axis of galaxies.
NODES = 4
OVERSAMPLE = 3
#: Light per pixel (ADU) below which a stamp ends, and the largest stamp's half-width.
FAINTEST = 0.25
MAX_RADIUS = 160
#: b_n of an exponential (Sersic n = 1): I(r) ~ exp(-b * r / r_e).
_EXP_B = 1.678347

_t, _w = np.polynomial.legendre.leggauss(NODES)
_OFFSETS, _WEIGHTS = _t / 2.0, _w / 2.0


def moffat_alpha(fwhm: float, beta: float) -> float:
    """The Moffat core width of a profile of ``fwhm`` (same unit)."""
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


@dataclass(frozen=True)
class Moffat:
    """An exposure's PSF, in pixels: ``I ~ (1 + q)**-beta`` with ``q`` the squared distance
    in units of ``alpha``, stretched by ``sqrt(elongation)`` along the major axis (``angle``
    degrees from +y towards -x, east of north) and shrunk as much across it, so the FWHM's
    geometric mean stays that of ``alpha`` and SExtractor's A/B is ``elongation``."""

    alpha: float
    beta: float
    elongation: float = 1.0
    angle: float = 0.0

    @classmethod
    def of(cls, fwhm: float, beta: float, elongation: float = 1.0, angle: float = 0.0) -> Moffat:
        """The PSF of ``fwhm`` pixels (geometric mean of the axes' FWHM)."""
        return cls(moffat_alpha(fwhm, beta), beta, elongation, angle)

    @property
    def major(self) -> float:
        """``alpha`` along the major axis."""
        return self.alpha * math.sqrt(self.elongation)

    @property
    def peak(self) -> float:
        """Surface brightness at the centre of a profile of unit flux."""
        return (self.beta - 1.0) / (math.pi * self.alpha**2)


def _stamp_radius(psf: Moffat, flux: np.ndarray) -> np.ndarray:
    """Half-width (pixels) of the stamps holding stars' light above :data:`FAINTEST`."""
    peak = np.maximum(flux * psf.peak, FAINTEST)
    radius = psf.major * np.sqrt((peak / FAINTEST) ** (1.0 / psf.beta) - 1.0)
    return np.clip(radius, 3.0 * psf.major, MAX_RADIUS)


def reach(flux: np.ndarray, radius: np.ndarray, psf: Moffat) -> np.ndarray:
    """Half-width (pixels) of each source's stamp: a star's (``radius`` 0) or a galaxy's of
    half-light ``radius`` pixels; what :func:`add_star` and :func:`add_galaxy` draw."""
    galaxy = np.minimum(MAX_RADIUS, np.ceil(5.0 * radius + 5.0 * psf.major + 2))
    return np.where(radius > 0, galaxy, _stamp_radius(psf, flux)) + 2


def _window(centre: float, radius: int, size: int) -> tuple[int, int]:
    low = max(0, math.floor(centre) - radius)
    high = min(size, math.floor(centre) + radius + 2)
    return low, high


def add_star(
    image: np.ndarray, x: float, y: float, flux: float, psf: Moffat, radius: int | None = None
) -> None:
    """Add a star of ``flux`` centred at 0-based pixel (``x``, ``y``) to ``image`` (its stamp
    ``radius`` pixels, or as far as its light shows)."""
    if radius is None:
        radius = int(_stamp_radius(psf, np.array(flux)))
    x_low, x_high = _window(x, radius, image.shape[1])
    y_low, y_high = _window(y, radius, image.shape[0])
    if x_low >= x_high or y_low >= y_high:
        return
    # Offsets of every integration node: (pixel row, pixel column, node y, node x).
    dx = (np.arange(x_low, x_high)[:, None] + _OFFSETS[None, :] - x)[None, :, None, :]
    dy = (np.arange(y_low, y_high)[:, None] + _OFFSETS[None, :] - y)[:, None, :, None]
    if psf.elongation == 1.0:
        q = (dx**2 + dy**2) / psf.alpha**2
    else:
        theta = math.radians(psf.angle)
        along = -dx * math.sin(theta) + dy * math.cos(theta)
        across = dx * math.cos(theta) + dy * math.sin(theta)
        q = (along**2 / psf.elongation + across**2 * psf.elongation) / psf.alpha**2
    weights = _WEIGHTS[:, None] * _WEIGHTS[None, :]
    values = ((1.0 + q) ** -psf.beta * weights).sum(axis=(2, 3))
    image[y_low:y_high, x_low:x_high] += flux * psf.peak * values


@lru_cache(maxsize=8)
def _psf_kernel(psf: Moffat) -> np.ndarray:
    """The pixel-integrated PSF on an odd square of pixels, summing to 1 (shared: read only)."""
    half = math.ceil(min(MAX_RADIUS, 5.0 * psf.major))
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    add_star(kernel, float(half), float(half), 1.0, psf, radius=half)
    kernel /= kernel.sum()
    return kernel


def add_galaxy(
    image: np.ndarray,
    x: float,
    y: float,
    flux: float,
    *,
    radius: float,
    axis_ratio: float,
    angle: float,
    psf: Moffat,
) -> None:
    """Add an exponential disc (half-light ``radius`` pixels, ``axis_ratio``, major axis at
    ``angle`` degrees from +y towards -x, i.e. east of north) seen through ``psf``."""
    half = int(min(MAX_RADIUS, math.ceil(5.0 * radius + 5.0 * psf.major + 2)))
    x_low, x_high = _window(x, half, image.shape[1])
    y_low, y_high = _window(y, half, image.shape[0])
    if x_low >= x_high or y_low >= y_high:
        return
    step = 1.0 / OVERSAMPLE
    sub = (np.arange(OVERSAMPLE) + 0.5) * step - 0.5
    # The disc on the fine grid of the full (untrimmed) stamp, so trimming at the CCD's edge
    # does not move its light.
    x0, y0 = math.floor(x) - half, math.floor(y) - half
    size = 2 * half + 2
    fine = (np.arange(size)[:, None] + sub[None, :]).ravel()
    dx = fine[None, :] + x0 - x
    dy = fine[:, None] + y0 - y
    theta = math.radians(angle)
    major = -dx * math.sin(theta) + dy * math.cos(theta)
    minor = dx * math.cos(theta) + dy * math.sin(theta)
    r = np.sqrt(major**2 + (minor / max(axis_ratio, 1e-3)) ** 2)
    disc = np.exp(-_EXP_B * r / max(radius, 1e-3))
    disc /= disc.sum()
    binned = disc.reshape(size, OVERSAMPLE, size, OVERSAMPLE).sum(axis=(1, 3))
    seen = _convolve(binned, _psf_kernel(psf))
    image[y_low:y_high, x_low:x_high] += (
        flux * seen[y_low - y0 : y_high - y0, x_low - x0 : x_high - x0]
    )


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``image`` convolved with a centred odd ``kernel`` (same shape as ``image``; FFT)."""
    ny, nx = image.shape
    ky, kx = kernel.shape
    shape = (ny + ky - 1, nx + kx - 1)
    full = np.fft.irfft2(np.fft.rfft2(image, shape) * np.fft.rfft2(kernel, shape), shape)
    return full[ky // 2 : ky // 2 + ny, kx // 2 : kx // 2 + nx]

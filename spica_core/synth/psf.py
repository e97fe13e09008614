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


def moffat_radius(flux: float, alpha: float, beta: float) -> int:
    """Half-width (pixels) of the stamp holding a star's light above :data:`FAINTEST`."""
    peak = flux * (beta - 1.0) / (math.pi * alpha**2)
    if peak <= FAINTEST:
        return 2
    radius = alpha * math.sqrt((peak / FAINTEST) ** (1.0 / beta) - 1.0)
    return int(min(MAX_RADIUS, max(3.0 * alpha, radius)))


def _window(centre: float, radius: int, size: int) -> tuple[int, int]:
    low = max(0, math.floor(centre) - radius)
    high = min(size, math.floor(centre) + radius + 2)
    return low, high


def add_star(
    image: np.ndarray,
    x: float,
    y: float,
    flux: float,
    alpha: float,
    beta: float,
    radius: int | None = None,
) -> None:
    """Add a Moffat star of ``flux`` centred at 0-based pixel (``x``, ``y``) to ``image``
    (its stamp ``radius`` pixels, or as far as its light shows)."""
    if radius is None:
        radius = moffat_radius(flux, alpha, beta)
    x_low, x_high = _window(x, radius, image.shape[1])
    y_low, y_high = _window(y, radius, image.shape[0])
    if x_low >= x_high or y_low >= y_high:
        return
    u = (np.arange(x_low, x_high)[:, None] + _OFFSETS[None, :] - x) / alpha
    v = (np.arange(y_low, y_high)[:, None] + _OFFSETS[None, :] - y) / alpha
    r2 = v[:, None, :, None] ** 2 + u[None, :, None, :] ** 2  # (ny, nx, node_y, node_x)
    weights = _WEIGHTS[:, None] * _WEIGHTS[None, :]
    values = ((1.0 + r2) ** -beta * weights).sum(axis=(2, 3))
    image[y_low:y_high, x_low:x_high] += flux * (beta - 1.0) / (math.pi * alpha**2) * values


@lru_cache(maxsize=8)
def _psf_kernel(alpha: float, beta: float) -> np.ndarray:
    """The pixel-integrated PSF on an odd square of pixels, summing to 1 (shared: read only)."""
    half = math.ceil(min(MAX_RADIUS, 5.0 * alpha))
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    add_star(kernel, float(half), float(half), 1.0, alpha, beta, radius=half)
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
    alpha: float,
    beta: float,
) -> None:
    """Add an exponential disc (half-light ``radius`` pixels, ``axis_ratio``, major axis at
    ``angle`` degrees from +y towards -x, i.e. east of north) seen through the PSF."""
    half = int(min(MAX_RADIUS, math.ceil(5.0 * radius + 5.0 * alpha + 2)))
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
    seen = _convolve(binned, _psf_kernel(alpha, beta))
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

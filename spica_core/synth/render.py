"""A CCD's pixels drawn from the sky: what the telescope would have recorded, and the truth.

Each CCD is drawn through its *true* WCS (the pointing less the exposure's pointing error,
:mod:`.observing`), while its header carries the reported one. The light of every source
whose stamp touches the CCD (stars and galaxies of :mod:`.sky` through the Moffat PSF of
:mod:`.psf`) is added to the sky background; electrons get Poisson noise, the amplifier
read noise, and ADU are clipped at SATURATE. The noise is seeded by the exposure and the
CCD, so the same spec gives the same pixels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spica_core.synth import observing
from spica_core.synth.layout import ExposureSpec, ccd_cards, wcs_cards
from spica_core.synth.psf import MAX_RADIUS, Moffat, add_galaxy, add_star, reach
from spica_core.synth.sky import GALAXY, SKY, SkyModel, Sources, sources_in

if TYPE_CHECKING:
    from astropy.wcs import WCS


@dataclass(frozen=True)
class CcdTruth:
    """The sources drawn on one CCD whose centre falls on it."""

    index: int
    sources: Sources
    #: 1-based FITS pixel coordinates of the centres (true WCS).
    x: np.ndarray
    y: np.ndarray
    #: Total ADU and whether the noiseless peak reached SATURATE.
    flux: np.ndarray
    saturated: np.ndarray
    sky: float
    gain: float


@dataclass(frozen=True)
class RenderedCcd:
    pixels: np.ndarray
    truth: CcdTruth


def _wcs(cards: list[tuple[str, object, str]]) -> WCS:
    from astropy.io import fits
    from astropy.wcs import WCS

    return WCS(fits.Header(cards))


def true_wcs(spec: ExposureSpec, index: int) -> WCS:
    """The WCS the pixels of CCD ``index`` were drawn with."""
    ra, dec = observing.true_pointing(spec)
    return _wcs(wcs_cards(spec, index, ra, dec))  # type: ignore[arg-type]


def header_wcs(spec: ExposureSpec, index: int) -> WCS:
    """The WCS CCD ``index``'s header says (off by the pointing error)."""
    return _wcs(ccd_cards(spec, index))  # type: ignore[arg-type]


def _footprint(
    wcs: WCS, shape: tuple[int, int], margin: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """RA and Dec ranges (deg) covering the CCD and ``margin`` pixels around it."""
    ny, nx = shape
    xs = np.array([-margin, nx / 2, nx - 1 + margin])
    ys = np.array([-margin, ny / 2, ny - 1 + margin])
    grid_x, grid_y = np.meshgrid(xs, ys)
    ra, dec = wcs.wcs_pix2world(grid_x.ravel(), grid_y.ravel(), 0)
    centre = ra[4]
    dra = (ra - centre + 180.0) % 360.0 - 180.0
    return (centre + dra.min(), centre + dra.max()), (float(dec.min()), float(dec.max()))


def _noise_rng(spec: ExposureSpec, index: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(f"sky/{spec.filename}".encode()), index])


def render_ccd(spec: ExposureSpec, index: int, sky: SkyModel = SKY) -> RenderedCcd:
    """CCD ``index`` of ``spec``: uint16 ADU and the truth of the sources centred on it."""
    if spec.pixel_scale is None:
        raise ValueError(
            f"{spec.filename}: drawing the sky needs pixels of a real scale "
            "(ExposureSpec.pixel_scale, e.g. layout.NATIVE_SCALE)"
        )
    ny, nx = spec.ccd_shape
    wcs = true_wcs(spec, index)
    ra_range, dec_range = _footprint(wcs, spec.ccd_shape, MAX_RADIUS)
    found = sources_in(sky, ra_range, dec_range)
    x, y = wcs.wcs_world2pix(found.ra, found.dec, 0)
    scale = spec.pixel_scale
    psf = Moffat.of(observing.seeing(spec) / scale, spec.beta, spec.elongation, spec.psf_angle)
    flux = observing.flux_adu(spec, found.mag)
    margin = reach(flux, found.radius / scale, psf)
    near = (x > -margin) & (x < nx - 1 + margin) & (y > -margin) & (y < ny - 1 + margin)
    found, x, y, flux = found.take(near), x[near], y[near], flux[near]
    model = np.zeros(spec.ccd_shape)
    for i in np.argsort(found.mag):
        if found.kind[i] == GALAXY:
            add_galaxy(
                model,
                float(x[i]),
                float(y[i]),
                float(flux[i]),
                radius=float(found.radius[i]) / scale,
                axis_ratio=float(found.axis_ratio[i]),
                angle=float(found.angle[i]),
                psf=psf,
            )
        else:
            add_star(model, float(x[i]), float(y[i]), float(flux[i]), psf)
    background = observing.sky_level(spec, index)
    gain = spec.gain(index)
    rng = _noise_rng(spec, index)
    electrons = rng.poisson((model + background) * gain).astype(float)
    electrons += rng.normal(0.0, spec.read_noise, size=spec.ccd_shape)
    ceiling = min(spec.saturate, float(np.iinfo(np.uint16).max))
    pixels = np.clip(np.rint(electrons / gain), 0, ceiling).astype(np.uint16)
    on = (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
    column = np.clip(np.rint(x[on]).astype(int), 0, nx - 1)
    row = np.clip(np.rint(y[on]).astype(int), 0, ny - 1)
    saturated = model[row, column] + background >= spec.saturate
    truth = CcdTruth(
        index=index,
        sources=found.take(on),
        x=x[on] + 1.0,
        y=y[on] + 1.0,
        flux=flux[on],
        saturated=saturated,
        sky=background,
        gain=gain,
    )
    return RenderedCcd(pixels, truth)


class SkyPixels:
    """A :data:`~spica_core.synth.writer.PixelSource` drawing the sky, keeping each CCD's
    truth for :func:`spica_core.synth.truth.write_truth`."""

    def __init__(self, sky: SkyModel = SKY) -> None:
        self.sky = sky
        self.truths: dict[tuple[str, int], CcdTruth] = {}

    def __call__(self, spec: ExposureSpec, index: int) -> np.ndarray:
        rendered = render_ccd(spec, index, self.sky)
        self.truths[(spec.filename, index)] = rendered.truth
        return rendered.pixels

    def truth(self, spec: ExposureSpec) -> list[CcdTruth]:
        """The truth of every CCD of ``spec`` drawn so far, in CCD order."""
        return [
            self.truths[(spec.filename, i)]
            for i in range(spec.ccds)
            if (spec.filename, i) in self.truths
        ]

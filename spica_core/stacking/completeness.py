"""How deep a co-add goes: its zero point, and the completeness measured with artificial stars.

A unit's lines after the co-add's catalogue and PSF model (see
:mod:`spica_core.stacking.commands`)::

    spica stack inject STACK --workdir W --refcat REF   # zero point, then the injected copy
    source-extractor <inject_image> ...                 # -> StackOutputs.inject_catalog
    spica stack record STACK --workdir W                # completeness(), the truth's ZP

The interfaces the record reads, kept stable:

* :func:`completeness` ``(truth_path, catalog_path, *, fraction=0.8, radius_px=None) ->
  float | None``: the magnitude where the recovered fraction of the injected stars falls to
  ``fraction`` (None when the injection cannot tell; :func:`completeness_curve` says why).
* :func:`injected_truth` ``(truth_path) -> InjectedTruth`` (zero point, its stars, seeing,
  stars injected), read from the header of
  ``StackOutputs.inject_truth``: a FITS table (extension ``INJECTED``: ``X``, ``Y`` 1-based
  pixels of the co-add, ``RA``, ``DEC`` deg, ``MAG``, ``FLUX`` ADU) whose header holds ``ZP``
  (the co-add's zero point, mag of 1 ADU), ``ZP_N`` (reference stars it rests on),
  ``SEEING`` (the injected FWHM, arcsec), ``FWHM_PX``, ``BETA``, ``PIXSCALE`` and ``N``.

The zero point is that of total magnitudes: ``MAG_ref + 2.5 log10(FLUX_AUTO)`` over the
unflagged, well-measured co-add sources matched to the release's reference catalogue,
corrected by the light a Kron aperture misses (measured on the co-add's own bright stars
with a wide aperture), so an injected star of magnitude m carries the light a real star of
magnitude m has. The stars are pixel-integrated Moffat profiles of the PSF PSFEx measured
(:mod:`spica_core.synth.psf`), put on a jittered grid away from the co-add's sources and
from pixels without weight; the co-add's own noise is their noise.

The co-add's catalogue (source-extractor's FITS_LDAC) needs ``X_IMAGE``, ``Y_IMAGE``,
``ALPHA_J2000``/``DELTA_J2000`` (or ``X_WORLD``/``Y_WORLD``), ``FLUX_AUTO`` and ``FLAGS``,
and uses ``FLUXERR_AUTO`` and ``FLUX_RADIUS`` when present; the injected copy's, ``X_IMAGE``
and ``Y_IMAGE``. The reference catalogue is FITS_LDAC with ``X_WORLD``, ``Y_WORLD``, ``MAG``.
"""

from __future__ import annotations

import math
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spica_core.errors import SpicaError
from spica_core.node.files import one_line
from spica_core.stacking.outputs import StackOutputs

if TYPE_CHECKING:
    import numpy as np

#: Reference match radius (arcsec), and the fewest matches a zero point rests on.
MATCH_RADIUS = 1.0
MIN_MATCHES = 5
#: Signal-to-noise (FLUX_AUTO / FLUXERR_AUTO) of the sources a zero point uses.
MIN_SNR = 20.0
#: Aperture correction: radius of the wide aperture and of the sky annulus (FWHM).
WIDE_APERTURE, ANNULUS = 4.0, (5.0, 7.0)
#: Injection grid step (FWHM), clearance from a source (FWHM, plus twice its FLUX_RADIUS),
#: a star's stamp radius (FWHM: its light beyond is below the noise; the whole stamp on
#: pixels with weight), and the most stars injected.
GRID_STEP = 10.0
SOURCE_CLEARANCE = 3.0
STAMP = 4.0
MAX_STARS = 20000
#: Injected magnitudes: uniform from this far above the co-add's 5-sigma point-source
#: limit (from its pixel noise, which resampling makes look smaller than it is: detection
#: fades about a magnitude brighter) to this far below it.
BRIGHT_SPAN, FAINT_SPAN = 3.5, 1.0
#: Moffat beta when PSFEx did not fit one.
DEFAULT_BETA = 3.0
#: Completeness: the fewest injected stars, and the fewest per magnitude bin.
MIN_INJECTED = 20
PER_BIN = 20
MIN_BIN_WIDTH = 0.2


class CompletenessFailed(SpicaError):
    """The zero point or the injection cannot be made: the message names the file."""


@dataclass(frozen=True)
class CoaddPsf:
    """The co-add's PSF as PSFEx measured it."""

    #: FWHM in arcsec (PSFEx's ``FWHM_WCS_Mean``) and in co-add pixels.
    fwhm: float
    fwhm_px: float
    beta: float


@dataclass(frozen=True)
class Injection:
    """What :func:`inject` wrote."""

    image: Path
    truth: Path
    stars: int
    zero_point: float
    #: The injected magnitudes' range.
    bright: float
    faint: float


@dataclass(frozen=True)
class InjectedTruth:
    """The header of ``StackOutputs.inject_truth``: what the record keeps of the injection."""

    zero_point: float
    zero_point_stars: int
    seeing: float
    stars: int


@dataclass(frozen=True)
class CompletenessCurve:
    """The recovered fraction per magnitude bin (monotone), and where it crosses."""

    magnitude: float | None
    #: Why ``magnitude`` is None.
    reason: str | None
    fraction: float
    #: (bin centre, injected, recovered, smoothed fraction)
    bins: tuple[tuple[float, int, int, float], ...]


# -- reading the tools' outputs ---------------------------------------------------------


def _objects(path: Path, columns: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """``columns`` of the first ``LDAC_OBJECTS`` table of a FITS_LDAC file (those present)."""
    import fitsio
    import numpy as np

    if not path.is_file():
        raise CompletenessFailed(f"{what} {path} is missing")
    try:
        with fitsio.FITS(str(path)) as hdus:
            for n in range(1, len(hdus)):
                if hdus[n].get_extname() != "LDAC_OBJECTS":
                    continue
                present = [c for c in columns if c in hdus[n].get_colnames()]
                if not hdus[n].get_nrows():
                    return {c: np.zeros(0) for c in present}
                data = hdus[n].read(columns=present)
                return {c: np.asarray(data[c], dtype=float) for c in present}
    except Exception as exc:
        raise CompletenessFailed(f"{what} {path} is unreadable ({one_line(exc)})") from exc
    raise CompletenessFailed(f"{what} {path} has no LDAC_OBJECTS table (not FITS_LDAC)")


def _need(table: dict[str, np.ndarray], names: Sequence[str], what: str, path: Path) -> None:
    missing = [n for n in names if n not in table]
    if missing:
        raise CompletenessFailed(f"{what} {path} lacks column(s) {', '.join(missing)}")


def _catalog_world(table: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, np.ndarray]:
    for ra, dec in (("ALPHA_J2000", "DELTA_J2000"), ("X_WORLD", "Y_WORLD")):
        if ra in table and dec in table:
            return table[ra], table[dec]
    raise CompletenessFailed(
        f"co-add catalogue {path} has no sky positions (ALPHA_J2000/DELTA_J2000 or X_WORLD/Y_WORLD)"
    )


_CATALOG_COLUMNS = (
    "X_IMAGE", "Y_IMAGE", "ALPHA_J2000", "DELTA_J2000", "X_WORLD", "Y_WORLD",
    "FLUX_AUTO", "FLUXERR_AUTO", "FLAGS", "FLUX_RADIUS",
)  # fmt: skip


def coadd_psf(outputs: StackOutputs) -> CoaddPsf:
    """The co-add's PSF from PSFEx's XML (read leniently, as QFin reads it)."""
    from spica_core.qfin.measure import QfinFailed, psfex_extensions

    try:
        rows = psfex_extensions(outputs.psfex_xml, f"stack {outputs.stack}")
    except QfinFailed as exc:
        raise CompletenessFailed(str(exc)) from exc
    row = rows.get(1) or next(iter(rows.values()), {})
    fwhm, fwhm_px = _number(row.get("FWHM_WCS_Mean")), _number(row.get("FWHM_Mean"))
    if not fwhm or not fwhm_px:
        raise CompletenessFailed(
            f"stack {outputs.stack}: PSFEx's XML {outputs.psfex_xml} has no PSF FWHM "
            "(no PSF star accepted?)"
        )
    beta = _number(row.get("MoffatBeta_Mean"))
    return CoaddPsf(fwhm, fwhm_px, beta if beta and beta > 1.0 else DEFAULT_BETA)


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


# -- matching ---------------------------------------------------------------------------


def nearest(
    x: np.ndarray, y: np.ndarray, to_x: np.ndarray, to_y: np.ndarray, radius: float
) -> np.ndarray:
    """For each (x, y), the index of the nearest (to_x, to_y) within ``radius``, else -1."""
    import numpy as np

    found = np.full(len(x), -1, dtype=int)
    if not len(to_x):
        return found
    order = np.argsort(to_x)
    sx, sy = to_x[order], to_y[order]
    low = np.searchsorted(sx, x - radius, side="left")
    high = np.searchsorted(sx, x + radius, side="right")
    for i in np.flatnonzero(high > low):
        distance = np.hypot(sx[low[i] : high[i]] - x[i], sy[low[i] : high[i]] - y[i])
        best = int(np.argmin(distance))
        if distance[best] <= radius:
            found[i] = int(order[low[i] + best])
    return found


def _tangent(
    ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (arcsec) east and north of (ra0, dec0): small fields, plain enough to match."""
    import numpy as np

    east = ((ra - ra0 + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec0)) * 3600.0
    return east, (dec - dec0) * 3600.0 + np.zeros_like(east)


# -- zero point -------------------------------------------------------------------------


def zero_point(
    catalog: Path, refcat: Path, *, coadd: Path | None = None, fwhm_px: float | None = None
) -> tuple[float, int]:
    """The co-add's zero point (magnitude of 1 ADU) and how many reference stars it rests on.

    With ``coadd`` and ``fwhm_px``, the Kron fluxes are corrected to total fluxes on the
    co-add's pixels (see the module's docstring). Raises :class:`CompletenessFailed` when
    fewer than :data:`MIN_MATCHES` usable sources match the reference catalogue.
    """
    import numpy as np

    cat = _objects(catalog, _CATALOG_COLUMNS, "co-add catalogue")
    _need(cat, ("FLUX_AUTO", "FLAGS"), "co-add catalogue", catalog)
    ra, dec = _catalog_world(cat, catalog)
    ref = _objects(refcat, ("X_WORLD", "Y_WORLD", "MAG"), "reference catalogue")
    _need(ref, ("X_WORLD", "Y_WORLD", "MAG"), "reference catalogue", refcat)
    flux = cat["FLUX_AUTO"]
    usable = (cat["FLAGS"] == 0) & (flux > 0)
    if "FLUXERR_AUTO" in cat:
        usable &= flux >= MIN_SNR * cat["FLUXERR_AUTO"]
    ra0, dec0 = (float(np.median(ra)), float(np.median(dec))) if len(ra) else (0.0, 0.0)
    cx, cy = _tangent(ra, dec, ra0, dec0)
    rx, ry = _tangent(ref["X_WORLD"], ref["Y_WORLD"], ra0, dec0)
    match = nearest(cx, cy, rx, ry, MATCH_RADIUS)
    chosen = np.flatnonzero(usable & (match >= 0) & np.isfinite(ref["MAG"][match]))
    if len(chosen) < MIN_MATCHES:
        raise CompletenessFailed(
            f"co-add catalogue {catalog}: {len(chosen)} usable source(s) match reference "
            f'catalogue {refcat} within {MATCH_RADIUS}" (at least {MIN_MATCHES} needed for '
            "a zero point)"
        )
    values = ref["MAG"][match[chosen]] + 2.5 * np.log10(flux[chosen])
    if coadd is not None and fwhm_px is not None:
        if not coadd.is_file():
            raise CompletenessFailed(f"co-add {coadd} is missing")
        _need(cat, ("X_IMAGE", "Y_IMAGE"), "co-add catalogue", catalog)
        values += 2.5 * math.log10(_aperture_correction(coadd, cat, chosen, fwhm_px) or 1.0)
    kept = _clipped(values)
    return float(np.median(values[kept])), int(kept.sum())


def _clipped(values: np.ndarray, sigmas: float = 3.0) -> np.ndarray:
    """Mask of ``values`` within ``sigmas`` robust deviations of their median (iterated)."""
    import numpy as np

    keep = np.ones(len(values), dtype=bool)
    for _ in range(5):
        centre = np.median(values[keep])
        spread = 1.4826 * np.median(np.abs(values[keep] - centre))
        new = np.abs(values - centre) <= max(sigmas * spread, 1e-3)
        if (new == keep).all():
            break
        keep = new
    return keep


def _aperture_correction(
    coadd: Path, cat: dict[str, np.ndarray], chosen: np.ndarray, fwhm_px: float
) -> float | None:
    """Median of wide-aperture flux over FLUX_AUTO of the isolated ``chosen`` sources."""
    import numpy as np
    from astropy.io import fits

    x, y = cat["X_IMAGE"] - 1.0, cat["Y_IMAGE"] - 1.0
    radius, (inner, outer) = WIDE_APERTURE * fwhm_px, (a * fwhm_px for a in ANNULUS)
    half = math.ceil(outer) + 1
    ratios = []
    try:
        with fits.open(coadd, memmap=True) as hdus:
            data = hdus[0].data
            ny, nx = data.shape
            for i in chosen[np.argsort(-cat["FLUX_AUTO"][chosen])][:200]:
                others = np.hypot(x - x[i], y - y[i])
                others[i] = np.inf
                xi, yi = round(x[i]), round(y[i])
                if others.min() < outer + radius or not (
                    half <= xi < nx - half and half <= yi < ny - half
                ):
                    continue
                rows, columns = np.mgrid[yi - half : yi + half + 1, xi - half : xi + half + 1]
                r = np.hypot(columns - x[i], rows - y[i])
                stamp = np.asarray(
                    data[yi - half : yi + half + 1, xi - half : xi + half + 1], dtype=float
                )
                sky = np.median(stamp[(r >= inner) & (r < outer)])
                wide = float((stamp[r < radius] - sky).sum())
                if wide > 0:
                    ratios.append(wide / cat["FLUX_AUTO"][i])
    except Exception as exc:
        raise CompletenessFailed(f"co-add {coadd} is unreadable ({one_line(exc)})") from exc
    return float(np.median(ratios)) if len(ratios) >= 3 else None


# -- injection --------------------------------------------------------------------------


def inject(
    outputs: StackOutputs,
    *,
    zero_point: float,
    seeing: float,
    seed: int,
    beta: float = DEFAULT_BETA,
    zero_point_stars: int = 0,
) -> Injection:
    """Write ``outputs.inject_image`` (the co-add with artificial stars of FWHM ``seeing``
    arcsec) and ``outputs.inject_truth``; the co-add itself is never written to."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    from spica_core.synth.psf import Moffat, add_star

    for path, what in ((outputs.coadd, "co-add"), (outputs.coadd_weight, "co-add weight")):
        if not path.is_file():
            raise CompletenessFailed(f"stack {outputs.stack}: {what} {path} is missing")
    try:
        header = fits.getheader(outputs.coadd)
        wcs = WCS(header)
        scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial))) * 3600.0
    except Exception as exc:
        raise CompletenessFailed(
            f"stack {outputs.stack}: co-add {outputs.coadd} has no usable WCS ({one_line(exc)})"
        ) from exc
    fwhm_px = seeing / scale
    cat = _objects(outputs.catalog, _CATALOG_COLUMNS, "co-add catalogue")
    _need(cat, ("X_IMAGE", "Y_IMAGE"), "co-add catalogue", outputs.catalog)
    rng = np.random.default_rng(seed)
    with fits.open(outputs.coadd_weight, memmap=True) as weights:
        weight = weights[0].data
        if weight is None or weight.ndim != 2:
            raise CompletenessFailed(
                f"stack {outputs.stack}: co-add weight {outputs.coadd_weight} is not an image"
            )
        x, y = _positions(weight, cat, fwhm_px, rng)
        noise = _sky_noise(outputs.coadd, weight)
    if not len(x):
        raise CompletenessFailed(
            f"stack {outputs.stack}: no room on co-add {outputs.coadd} for artificial stars "
            "(every place is near a source or without weight)"
        )
    # The 5-sigma limit of a point source in an aperture holding most of its light.
    limit = zero_point - 2.5 * math.log10(5.0 * noise * math.sqrt(math.pi) * fwhm_px)
    bright, faint = limit - BRIGHT_SPAN, limit + FAINT_SPAN
    mag = rng.uniform(bright, faint, len(x))
    flux = np.power(10.0, -0.4 * (mag - zero_point))
    psf = Moffat.of(fwhm_px, beta)
    stamp = _stamp(fwhm_px)
    partial = outputs.inject_image.with_name(f".{outputs.inject_image.name}.partial")
    shutil.copyfile(outputs.coadd, partial)
    try:
        # Stars added in place on the copy's pixels (mapped): a tile is never all in memory.
        with fits.open(partial, mode="update", memmap=True) as hdus:
            data = hdus[0].data
            if data is None or data.ndim != 2 or data.dtype.kind != "f":
                raise CompletenessFailed(
                    f"stack {outputs.stack}: co-add {outputs.coadd} is not an image of "
                    "floating-point pixels"
                )
            for xi, yi, fi in zip(x, y, flux, strict=True):
                add_star(data, float(xi), float(yi), float(fi), psf, radius=stamp)
            hdus.flush()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    ra, dec = wcs.celestial.wcs_pix2world(x, y, 0)
    _write_truth(
        outputs.inject_truth,
        columns={"X": x + 1.0, "Y": y + 1.0, "RA": ra, "DEC": dec, "MAG": mag, "FLUX": flux},
        cards=[
            ("ZP", zero_point, "Zero point of the co-add (mag of 1 ADU)"),
            ("ZP_N", zero_point_stars, "Reference stars the zero point rests on"),
            ("SEEING", seeing, "Injected PSF FWHM (arcsec)"),
            ("FWHM_PX", fwhm_px, "Injected PSF FWHM (co-add pixels)"),
            ("BETA", beta, "Injected Moffat beta"),
            ("PIXSCALE", scale, "Co-add pixel scale (arcsec/pixel)"),
            ("SKYNOISE", noise, "Co-add sky noise (ADU/pixel)"),
            ("N", len(x), "Stars injected"),
            ("SEED", seed, "Seed of positions and magnitudes"),
        ],
    )
    partial.replace(outputs.inject_image)
    return Injection(outputs.inject_image, outputs.inject_truth, len(x), zero_point, bright, faint)


def _positions(
    weight: np.ndarray, cat: dict[str, np.ndarray], fwhm_px: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel positions on a jittered grid, clear of sources and of no-weight pixels."""
    import numpy as np

    ny, nx = weight.shape
    step = max(GRID_STEP * fwhm_px, 8.0)
    edge = _stamp(fwhm_px) + 2
    gx, gy = np.meshgrid(np.arange(edge, nx - edge, step), np.arange(edge, ny - edge, step))
    # Each point anywhere in its cell but the outer fifth: neighbours stay apart, and the
    # stars sample every phase of the pixels.
    shake = 0.3 * step
    x = np.clip(gx.ravel() + rng.uniform(-shake, shake, gx.size), edge, nx - 1 - edge)
    y = np.clip(gy.ravel() + rng.uniform(-shake, shake, gy.size), edge, ny - 1 - edge)
    reach = SOURCE_CLEARANCE * fwhm_px + 2.0 * np.clip(
        cat.get("FLUX_RADIUS", np.zeros(len(cat["X_IMAGE"]))), 0.0, None
    )
    clear = _clear_of(x, y, cat["X_IMAGE"] - 1.0, cat["Y_IMAGE"] - 1.0, reach)
    x, y = x[clear], y[clear]
    columns, rows = np.rint(x).astype(int), np.rint(y).astype(int)
    keep = np.array(
        [
            bool(weight[r - edge : r + edge + 1, c - edge : c + edge + 1].min() > 0)
            for c, r in zip(columns, rows, strict=True)
        ],
        dtype=bool,
    )
    x, y = x[keep], y[keep]
    if len(x) > MAX_STARS:
        chosen = np.sort(rng.choice(len(x), MAX_STARS, replace=False))
        x, y = x[chosen], y[chosen]
    return x, y


def _clear_of(
    x: np.ndarray, y: np.ndarray, sx: np.ndarray, sy: np.ndarray, reach: np.ndarray
) -> np.ndarray:
    """Mask of the points (x, y) farther than ``reach`` from every source (sx, sy)."""
    import numpy as np

    clear = np.ones(len(x), dtype=bool)
    order = np.argsort(x)
    ox, oy = x[order], y[order]
    low = np.searchsorted(ox, sx - reach, side="left")
    high = np.searchsorted(ox, sx + reach, side="right")
    for i in np.flatnonzero(high > low):
        window = slice(low[i], high[i])
        close = np.hypot(ox[window] - sx[i], oy[window] - sy[i]) < reach[i]
        clear[order[window][close]] = False
    return clear


def _stamp(fwhm_px: float) -> int:
    """Half-width (pixels) of an injected star's stamp."""
    return math.ceil(STAMP * fwhm_px) + 1


def _sky_noise(coadd: Path, weight: np.ndarray) -> float:
    """The co-add's pixel noise where it has weight (robust, on about a million pixels)."""
    import numpy as np
    from astropy.io import fits

    ny, nx = weight.shape
    step = max(1, int(math.sqrt(nx * ny / 1e6)))
    with fits.open(coadd, memmap=True) as hdus:
        values = np.asarray(hdus[0].data[::step, ::step], dtype=float)
    values = values[(np.asarray(weight[::step, ::step]) > 0) & np.isfinite(values)]
    if not len(values):
        raise CompletenessFailed(f"co-add {coadd} has no pixel with weight")
    keep = _clipped(values)
    return float(1.4826 * np.median(np.abs(values[keep] - np.median(values[keep]))))


def _write_truth(
    path: Path, columns: dict[str, np.ndarray], cards: list[tuple[str, object, str]]
) -> None:
    from astropy.io import fits

    from spica_core.synth.writer import hdus_bytes, replace_file

    table = fits.BinTableHDU.from_columns(
        [fits.Column(name, "D", array=values) for name, values in columns.items()],
        name="INJECTED",
    )
    table.header.extend(cards)
    replace_file(path, hdus_bytes(fits.HDUList([fits.PrimaryHDU(), table])))


def seed_of(stack: str) -> int:
    """The injection's seed for a stack: the same stars every time it is rebuilt."""
    return zlib.crc32(stack.encode())


# -- completeness -----------------------------------------------------------------------


def completeness(
    truth_path: Path,
    catalog_path: Path,
    *,
    fraction: float = 0.8,
    radius_px: float | None = None,
) -> float | None:
    """The magnitude where ``fraction`` of the injected stars are recovered within
    ``radius_px`` (default: the injected FWHM); None when the injection cannot tell."""
    return completeness_curve(
        truth_path, catalog_path, fraction=fraction, radius_px=radius_px
    ).magnitude


def completeness_curve(
    truth_path: Path,
    catalog_path: Path,
    *,
    fraction: float = 0.8,
    radius_px: float | None = None,
) -> CompletenessCurve:
    """:func:`completeness` with its bins and, when there is no answer, the reason."""
    truth, header = _read_truth(Path(truth_path))
    cat = _objects(Path(catalog_path), ("X_IMAGE", "Y_IMAGE"), "injected copy's catalogue")
    _need(cat, ("X_IMAGE", "Y_IMAGE"), "injected copy's catalogue", Path(catalog_path))
    if radius_px is None:
        radius_px = float(header.get("FWHM_PX") or 0.0) or 3.0
    found = nearest(truth["X"], truth["Y"], cat["X_IMAGE"], cat["Y_IMAGE"], radius_px) >= 0
    return recovery_curve(truth["MAG"], found, fraction)


def recovery_curve(mag: np.ndarray, found: np.ndarray, fraction: float = 0.8) -> CompletenessCurve:
    """Where the recovered fraction of sources of magnitude ``mag`` (``found`` or not) falls
    to ``fraction``: binned, made non-increasing with magnitude (pool-adjacent-violators,
    weighted by the bins' counts) and interpolated between bin centres."""
    import numpy as np

    def none(
        reason: str, bins: tuple[tuple[float, int, int, float], ...] = ()
    ) -> CompletenessCurve:
        return CompletenessCurve(None, reason, fraction, bins)

    if len(mag) < MIN_INJECTED:
        return none(f"{len(mag)} stars injected (at least {MIN_INJECTED} needed)")
    low, high = float(np.min(mag)), float(np.max(mag))
    width = max(MIN_BIN_WIDTH, (high - low) * PER_BIN / len(mag))
    edges = np.arange(low, high + width, width)
    index = np.clip(np.digitize(mag, edges) - 1, 0, len(edges) - 2)
    counts = np.bincount(index, minlength=len(edges) - 1)
    hits = np.bincount(index, weights=found.astype(float), minlength=len(edges) - 1)
    used = counts > 0
    centres = ((edges[:-1] + edges[1:]) / 2)[used]
    counts, hits = counts[used], hits[used]
    smooth = _decreasing(hits / counts, counts.astype(float))
    bins = tuple(
        (float(c), int(n), int(h), float(s))
        for c, n, h, s in zip(centres, counts, hits, smooth, strict=True)
    )
    below = np.flatnonzero(smooth < fraction)
    if not len(below):
        return none(
            f"more than {fraction:.0%} recovered down to the faintest injected ({high:.2f})",
            bins,
        )
    i = int(below[0])
    if i == 0:
        return none(
            f"less than {fraction:.0%} recovered already at the brightest injected ({low:.2f})",
            bins,
        )
    step = (smooth[i - 1] - fraction) / (smooth[i - 1] - smooth[i])
    magnitude = float(centres[i - 1] + step * (centres[i] - centres[i - 1]))
    return CompletenessCurve(magnitude, None, fraction, bins)


def _decreasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-increasing sequence closest to ``values`` in weighted least squares."""
    import numpy as np

    blocks: list[list[float]] = []  # [value, weight, length]
    for v, w in zip(values, weights, strict=True):
        blocks.append([float(v), float(w), 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks])


def injected_truth(truth_path: Path) -> InjectedTruth:
    """The zero point, seeing and number of stars :func:`inject` wrote in its table."""
    _, header = _read_truth(Path(truth_path))
    try:
        return InjectedTruth(
            zero_point=float(header["ZP"]),
            zero_point_stars=int(header["ZP_N"]),
            seeing=float(header["SEEING"]),
            stars=int(header["N"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CompletenessFailed(
            f"injected stars' table {truth_path} lacks its header card {one_line(exc)}"
        ) from exc


def _read_truth(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import fitsio
    import numpy as np

    if not path.is_file():
        raise CompletenessFailed(f"injected stars' table {path} is missing")
    try:
        with fitsio.FITS(str(path)) as hdus:
            hdu = hdus["INJECTED"]
            cards = hdu.read_header()
            header = {key: cards[key] for key in cards.keys()}  # noqa: SIM118 (fitsio's)
            data = hdu.read(columns=["X", "Y", "MAG"]) if hdu.get_nrows() else None
    except Exception as exc:
        raise CompletenessFailed(
            f"injected stars' table {path} is unreadable ({one_line(exc)})"
        ) from exc
    columns = {
        c: np.asarray(data[c], dtype=float) if data is not None else np.zeros(0)
        for c in ("X", "Y", "MAG")
    }
    return columns, header

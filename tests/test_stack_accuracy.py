"""A stack's figures against the truth: the lines ``stack_commands`` generates, run with the
real ``source-extractor``, ``scamp``, ``SWarp``, ``psfex`` and ``stiff`` (and ``spica stack
prepare|inject|record`` through the installed CLI) on dithered synthetic exposures with
pointing errors of a few arcsec.

Targets (the issue's): co-add star positions within 0.05" RMS of the synthetic sky's truth;
SCAMP's internal RMS < 0.1" (as recorded); aperture fluxes of stars covered by every input
within 0.5 % of an independent co-add of the same inputs with SCAMP's ``.head`` WCS and
flux scales (``reproject``, photometry by ``sep``); total exposure = the inputs' sum.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.db.models import StackResult
from spica_core.stacking.outputs import StackOutputs
from tests.stack_support import (
    SyntheticStack,
    require_tools,
    run_lines,
    stack_database,
    synthetic_stack,
)

#: Aperture radius for the flux comparison (FWHM) and sky annulus (FWHM).
APERTURE, ANNULUS = 3.0, (5.0, 8.0)
#: A truth star is compared when no other source of the sky is this close (arcsec).
ISOLATION = 2.5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticStack]:
    require_tools()
    root = tmp_path_factory.mktemp("stack")
    stack = synthetic_stack(root)
    engine, config = stack_database(root, stack)
    run_lines(stack, env={"SPICA_CONFIG": str(config)})
    stack.engine = engine  # type: ignore[attr-defined]
    yield stack
    engine.dispose()


def _out(stack: SyntheticStack) -> StackOutputs:
    return StackOutputs(workdir=Path(stack.unit.workdir), stack=stack.unit.name)


def _result(stack: SyntheticStack) -> StackResult:
    engine = stack.engine  # type: ignore[attr-defined]
    with Session(engine) as s:
        return s.scalars(select(StackResult)).one()


def _catalog(path: Path) -> Any:
    with fits.open(path) as hdus:
        return hdus["LDAC_OBJECTS"].data.copy()


def _truth_stars(stack: SyntheticStack) -> tuple[np.ndarray, np.ndarray]:
    """The sky's unsaturated stars with no other source within ISOLATION (a blend's centroid
    is neither's)."""
    ra, dec, star = [], [], []
    for path in stack.truths:
        with fits.open(path) as hdus:
            rows = hdus["SOURCES"].data
            ra += list(rows["RA"])
            dec += list(rows["DEC"])
            star += list((rows["KIND"] == "star") & ~rows["SATURATED"])
    key = np.round(np.array(ra), 7) * 1e8 + np.round(np.array(dec), 7)
    _, first = np.unique(key, return_index=True)
    ra_all, dec_all = np.array(ra)[first], np.array(dec)[first]
    stars = np.array(star)[first]
    _, neighbour = _nearest(ra_all, dec_all, ra_all, dec_all, exclude_self=True)
    keep = stars & (neighbour > ISOLATION)
    return ra_all[keep], dec_all[keep]


def _nearest(
    ra: np.ndarray, dec: np.ndarray, ra2: np.ndarray, dec2: np.ndarray, *,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Index of the nearest (ra2, dec2) of each (ra, dec), and the separation (arcsec)."""
    cos = np.cos(np.radians(np.median(dec)))
    dx = (ra[:, None] - ra2[None, :]) * cos * 3600.0
    dy = (dec[:, None] - dec2[None, :]) * 3600.0
    sep = np.hypot(dx, dy)
    if exclude_self:
        sep[sep == 0] = np.inf
    index = np.argmin(sep, axis=1)
    return index, sep[np.arange(len(ra)), index]


def test_coadd_positions_match_the_truth(built: SyntheticStack) -> None:
    cat = _catalog(_out(built).catalog)
    snr = cat["FLUX_AUTO"] / np.maximum(cat["FLUXERR_AUTO"], 1e-9)
    bright = cat[(cat["FLAGS"] == 0) & (snr > 30)]
    ra, dec = _truth_stars(built)
    _, sep = _nearest(bright["ALPHA_J2000"], bright["DELTA_J2000"], ra, dec)
    matched = sep < 1.0
    assert matched.sum() >= 15, matched.sum()
    rms = float(np.sqrt(np.mean(sep[matched] ** 2)))
    print(f'\nco-add positions: {matched.sum()} stars, {rms:.4f}" RMS from the truth')
    assert rms < 0.05, rms


def test_recorded_result(built: SyntheticStack) -> None:
    result = _result(built)
    out = _out(built)
    assert result.scamp_internal_rms is not None and result.scamp_internal_rms < 0.1
    assert result.scamp_external_rms is not None and result.scamp_external_rms < 0.2
    inputs = built.unit.inputs
    assert result.exptime == sum(i.exptime for i in inputs) == sum(s.exptime for s in built.specs)
    assert result.scamp_inputs == result.swarp_inputs == len(inputs)
    assert result.seeing is not None and abs(result.seeing / built.specs[0].fwhm - 1) < 0.1  # type: ignore[operator]
    assert result.coadd_path == str(out.coadd) and Path(result.coadd_path).is_file()
    assert result.thumbnail_path == str(out.thumbnail) and out.thumbnail.stat().st_size > 0
    assert result.sources and result.sources > 20
    assert result.background_rms and result.background_rms > 0
    assert result.completeness is not None and result.zero_point is not None
    recorded = json.loads(out.result.read_text())
    assert recorded["figures"]["exptime"] == result.exptime
    print(f'\nSCAMP internal {result.scamp_internal_rms:.4f}", external '
          f'{result.scamp_external_rms:.4f}", seeing {result.seeing:.3f}", '
          f"completeness {result.completeness:.2f}, ZP {result.zero_point:.3f}")  # fmt: skip


def _head_blocks(path: Path) -> list[fits.Header]:
    """SCAMP's ``.head``: one header per CCD, each ending with END (its commentary cards,
    not ASCII, left out)."""
    blocks: list[list[str]] = [[]]
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip() == "END":
            blocks.append([])
        elif line[:8].strip() not in ("COMMENT", "HISTORY", ""):
            blocks[-1].append(line)
    return [fits.Header.fromstring("\n".join(b), sep="\n") for b in blocks if b]


def _box(
    source: WCS, source_shape: tuple[int, ...], wcs: WCS, shape: tuple[int, int]
) -> tuple[slice, slice] | None:
    """The co-add's pixels (y, x slices) around a CCD's outline projected on them (None when
    it falls outside): each CCD is resampled there, not over the whole co-add."""
    ny, nx = source_shape
    t = np.linspace(0.0, 1.0, 17)
    xs = np.concatenate([t * (nx - 1), np.full_like(t, nx - 1), t * (nx - 1), np.zeros_like(t)])
    ys = np.concatenate([np.zeros_like(t), t * (ny - 1), np.full_like(t, ny - 1), t * (ny - 1)])
    ox, oy = wcs.world_to_pixel(source.pixel_to_world(xs, ys))
    x0, x1 = max(int(np.floor(ox.min())) - 3, 0), min(int(np.ceil(ox.max())) + 4, shape[1])
    y0, y1 = max(int(np.floor(oy.min())) - 3, 0), min(int(np.ceil(oy.max())) + 4, shape[0])
    return (slice(y0, y1), slice(x0, x1)) if x1 > x0 and y1 > y0 else None


def _independent_coadd(built: SyntheticStack, shape: tuple[int, int], wcs: WCS) -> tuple[
    np.ndarray, np.ndarray
]:  # fmt: skip
    """Mean of the inputs resampled by ``reproject`` with SCAMP's WCS and FLXSCALE; and how
    many exposures cover each pixel."""
    from astropy.wcs.utils import proj_plane_pixel_area
    from reproject import reproject_interp

    out = _out(built)
    total = np.zeros(shape)
    count = np.zeros(shape)
    for item in built.unit.inputs:
        heads = _head_blocks(out.input_head(item.image))
        with fits.open(out.input_image(item.image)) as hdus:
            ccds = [h for h in hdus[1:] if h.data is not None]
            for hdu, head in zip(ccds, heads, strict=True):
                header = hdu.header.copy()
                for key in [k for k in header if k.startswith(("PV", "CD", "CRPIX", "CRVAL"))]:
                    del header[key]
                header.update(head)
                source = WCS(header)
                # Interpolation keeps surface brightness; fluxes are kept (as SWarp's
                # FSCALASTRO_TYPE FIXED does) by the ratio of the pixels' areas.
                area = proj_plane_pixel_area(wcs) / proj_plane_pixel_area(source)
                data = hdu.data.astype(float) * float(head["FLXSCALE"]) * area
                box = _box(source, data.shape, wcs, shape)
                if box is None:
                    continue
                array, footprint = reproject_interp((data, source), wcs[box], order="bicubic",
                                                    shape_out=total[box].shape)  # fmt: skip
                good = footprint > 0.99
                total[box][good] += array[good]
                count[box][good] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), 0.0), count


def test_aperture_fluxes_agree_with_an_independent_coadd(built: SyntheticStack) -> None:
    import sep

    out = _out(built)
    with fits.open(out.coadd) as hdus:
        coadd = hdus[0].data.astype(float)
        wcs = WCS(hdus[0].header)
    independent, count = _independent_coadd(built, coadd.shape, wcs)
    cat = _catalog(out.catalog)
    fwhm_px = built.specs[0].fwhm / built.unit.tile.pixel_scale  # type: ignore[operator]
    r = APERTURE * fwhm_px
    snr = cat["FLUX_AUTO"] / np.maximum(cat["FLUXERR_AUTO"], 1e-9)
    stars = cat[(cat["FLAGS"] == 0) & (snr > 100) & (cat["CLASS_STAR"] > 0.8)]
    x, y = stars["XWIN_IMAGE"] - 1.0, stars["YWIN_IMAGE"] - 1.0
    n = len(built.unit.inputs)
    pad = int(np.ceil(ANNULUS[1] * fwhm_px)) + 2
    # Every exposure covers the aperture and its sky annulus (the co-add's edge excluded).
    inside = (x >= pad) & (y >= pad) & (x + pad < coadd.shape[1]) & (y + pad < coadd.shape[0])
    covered = np.array([
        ok and bool(np.all(count[int(yi) - pad:int(yi) + pad, int(xi) - pad:int(xi) + pad] == n))
        for ok, xi, yi in zip(inside, x, y, strict=True)
    ])  # fmt: skip
    x, y = x[covered], y[covered]
    assert len(x) >= 5, len(x)
    annulus = (ANNULUS[0] * fwhm_px, ANNULUS[1] * fwhm_px)
    ours, _, _ = sep.sum_circle(np.ascontiguousarray(coadd), x, y, r, bkgann=annulus)
    theirs, _, _ = sep.sum_circle(np.ascontiguousarray(independent), x, y, r, bkgann=annulus)
    ratio = ours / theirs
    median = float(np.median(ratio))
    print(f"\naperture fluxes: {len(x)} stars, SWarp / reproject median {median:.5f}, "
          f"spread {np.std(ratio):.5f}")  # fmt: skip
    assert abs(median - 1.0) < 0.005, ratio
    assert float(np.median(np.abs(ratio - 1.0))) < 0.005, ratio

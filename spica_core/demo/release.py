"""The demo's stacking release: a tile grid with one small tile on each runid's pointing, the
release's rules, and its reference catalogue drawn from the synthetic sky.

The grid's tiles are :data:`TILE_PIXELS` pixels of 0.186" (about 2.4'), smaller than an
exposure's compact mosaic (:func:`spica_core.demo.repository.exposure_size`) so that every
dithered exposure of a runid covers its tile; each field is the one point of a runid's
pointing, so each field is one tile and the exposures of one runid never reach another's
tile. The rules take most demo exposures: grades A and B, more than 30 s, seeing under 1.3".
The reference catalogue (FITS_LDAC, :func:`spica_core.synth.refcat.write_reference_catalogue`)
covers every pointing; SCAMP reads it offline.
"""

from __future__ import annotations

import math
from pathlib import Path

from spica_core.config import (
    StackReleaseConfig,
    StackRulesConfig,
    TileFieldConfig,
    TileGridConfig,
)
from spica_core.demo.repository import FIRST_POINTING, RUNIDS, exposure_size, pointing

RELEASE = "T0003"
GRID = "demo-w1"
#: Co-add pixels per side, at CFHTLS's 0.186"/pixel.
TILE_PIXELS = 768
PIXEL_SCALE = 0.186
#: The reference catalogue, relative to the demo directory (spica.toml's directory).
REFERENCE_CATALOGUE = "refcat/demo-w1.ldac"
#: Magnitudes of the reference stars: bright enough to be measured well, faint enough that
#: each small CCD holds a score of them.
REFERENCE_MAGS = (16.0, 23.0)


def field_name(runid: str) -> str:
    return f"W1-{runid}"


def demo_grid() -> TileGridConfig:
    tile = TILE_PIXELS * PIXEL_SCALE / 3600.0
    fields = []
    for runid in RUNIDS:
        ra, dec = pointing(runid)
        fields.append(
            TileFieldConfig(name=field_name(runid), ra_min=ra, ra_max=ra, dec_min=dec, dec_max=dec)
        )
    return TileGridConfig(
        name=GRID,
        prefix="CFHTLS",
        survey="W",
        tile_pixels=TILE_PIXELS,
        pixel_scale=PIXEL_SCALE,
        row_step=round(tile, 6),
        exposure_size=round(exposure_size(), 6),
        fields=fields,
    )


def demo_release(directory: Path) -> StackReleaseConfig:
    """The release, its reference catalogue in the demo ``directory``."""
    return StackReleaseConfig(
        name=RELEASE,
        grid=GRID,
        mode="stack",
        rules=StackRulesConfig(
            grades=["A", "B"],
            min_exptime=30.0,
            max_seeing=1.3,
            max_airmass=1.7,
            min_images=2,
        ),
        reference_catalogue=str(directory / REFERENCE_CATALOGUE),
    )


def reference_region() -> tuple[tuple[float, float], float]:
    """Centre (deg) and radius (deg) of a circle holding every runid's mosaic."""
    first = pointing(RUNIDS[0])
    last = pointing(RUNIDS[-1])
    dec = FIRST_POINTING[1]
    centre = ((first[0] + last[0]) / 2.0, dec)
    half_span = (last[0] - first[0]) / 2.0 * math.cos(math.radians(dec))
    return centre, half_span + exposure_size()


def write_reference(directory: Path) -> Path:
    """The release's reference catalogue under ``directory`` (the demo's), written once."""
    from spica_core.synth.refcat import write_reference_catalogue

    path = directory / REFERENCE_CATALOGUE
    if path.exists():
        return path
    path.parent.mkdir(mode=0o700, exist_ok=True)
    centre, radius = reference_region()
    return write_reference_catalogue(path, centre, radius, mag_limits=REFERENCE_MAGS)

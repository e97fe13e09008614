"""One fixed synthetic sky: stars and galaxies every exposure sees at the same place.

The sphere is cut into cells of :data:`CELL` degrees in declination and about as much in
right ascension (fewer cells per row towards the poles); a cell's sources come from an RNG
seeded by the model's seed and the cell's indices alone, so two overlapping exposures draw
the same sources wherever they point and whatever else they cover. Star magnitudes follow
counts rising as ``10**(slope * m)``, as faint high-latitude star counts do; galaxies are
fewer, exponential discs of a half-light radius shrinking with magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Cell side (deg).
CELL = 0.1
STAR, GALAXY = 0, 1
KINDS = ("star", "galaxy")


@dataclass(frozen=True)
class SkyModel:
    """The sky's recipe; :data:`SKY` is the one every exposure uses unless told otherwise."""

    seed: int = 2003
    #: Stars per square degree between the magnitude limits, and their counts' slope.
    star_density: float = 40000.0
    star_mags: tuple[float, float] = (15.0, 24.0)
    star_slope: float = 0.15
    #: Galaxies per square degree, their magnitudes and counts' slope.
    galaxy_density: float = 4000.0
    galaxy_mags: tuple[float, float] = (17.0, 24.0)
    galaxy_slope: float = 0.3


SKY = SkyModel()


@dataclass(frozen=True)
class Sources:
    """Columns of sources (numpy arrays of one length)."""

    ra: np.ndarray
    dec: np.ndarray
    mag: np.ndarray
    #: :data:`STAR` or :data:`GALAXY`.
    kind: np.ndarray
    #: Galaxies' half-light radius (arcsec), axis ratio and position angle (deg, east of
    #: north); 0, 1, 0 for stars.
    radius: np.ndarray
    axis_ratio: np.ndarray
    angle: np.ndarray

    def __len__(self) -> int:
        return len(self.ra)

    def take(self, keep: np.ndarray) -> Sources:
        """The sources where ``keep`` (a mask or indices) says."""
        return Sources(*(getattr(self, f)[keep] for f in _FIELDS))


_FIELDS = ("ra", "dec", "mag", "kind", "radius", "axis_ratio", "angle")


def _concat(parts: list[Sources]) -> Sources:
    if not parts:
        empty = np.zeros(0)
        return Sources(empty, empty, empty, np.zeros(0, dtype=np.int8), empty, empty, empty)
    return Sources(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


def _row_cells(row: int) -> int:
    """How many cells of about :data:`CELL` degrees fit around declination row ``row``."""
    dec = -90.0 + (row + 0.5) * CELL
    return max(1, math.floor(360.0 * math.cos(math.radians(dec)) / CELL))


def _magnitudes(
    rng: np.random.Generator, n: int, limits: tuple[float, float], slope: float
) -> np.ndarray:
    """``n`` magnitudes with counts rising as ``10**(slope * m)`` (inverse CDF)."""
    low, high = limits
    span = 10 ** (slope * (high - low)) - 1.0
    return low + np.log10(1.0 + rng.random(n) * span) / slope


@lru_cache(maxsize=256)
def cell_sources(model: SkyModel, row: int, column: int) -> Sources:
    """The sources of cell (``row``, ``column``): the same for a model on every call (kept
    for the CCDs and exposures that share the cell; read only)."""
    per_row = _row_cells(row)
    column %= per_row
    dec_low = -90.0 + row * CELL
    ra_low, ra_width = column * 360.0 / per_row, 360.0 / per_row
    # The cell's area (deg^2), exact on the sphere.
    sin_low, sin_high = math.sin(math.radians(dec_low)), math.sin(math.radians(dec_low + CELL))
    area = math.radians(ra_width) * (sin_high - sin_low) * (180.0 / math.pi) ** 2
    rng = np.random.default_rng([model.seed, row, column])
    n_star = int(rng.poisson(model.star_density * area))
    n_gal = int(rng.poisson(model.galaxy_density * area))
    n = n_star + n_gal
    ra = ra_low + rng.random(n) * ra_width
    dec = np.degrees(np.arcsin(sin_low + rng.random(n) * (sin_high - sin_low)))
    kind = np.repeat(np.array([STAR, GALAXY], dtype=np.int8), [n_star, n_gal])
    mag = np.concatenate(
        [
            _magnitudes(rng, n_star, model.star_mags, model.star_slope),
            _magnitudes(rng, n_gal, model.galaxy_mags, model.galaxy_slope),
        ]
    )
    # Galaxies: brighter ones bigger (about 2" at 18, 0.4" at 24), scattered.
    gal_mag = mag[n_star:]
    radius = np.zeros(n)
    radius[n_star:] = 2.0 * 10 ** (-0.12 * (gal_mag - 18.0)) * rng.lognormal(0.0, 0.25, n_gal)
    axis_ratio = np.ones(n)
    axis_ratio[n_star:] = rng.uniform(0.35, 1.0, n_gal)
    angle = np.zeros(n)
    angle[n_star:] = rng.uniform(0.0, 180.0, n_gal)
    return Sources(ra % 360.0, dec, mag, kind, radius, axis_ratio, angle)


def sources_in(
    model: SkyModel, ra_range: tuple[float, float], dec_range: tuple[float, float]
) -> Sources:
    """Every source with ``dec`` in ``dec_range`` and ``ra`` in ``ra_range`` (deg; the RA
    range may wrap through 0, e.g. (359.5, 0.5))."""
    dec_low, dec_high = max(-90.0, dec_range[0]), min(90.0, dec_range[1])
    ra_low, ra_high = ra_range[0] % 360.0, ra_range[1] % 360.0
    wraps = ra_high < ra_low
    parts: list[Sources] = []
    for row in range(int((dec_low + 90.0) // CELL), int((dec_high + 90.0) // CELL) + 1):
        per_row = _row_cells(row)
        width = 360.0 / per_row
        first = math.floor(ra_low / width)
        last = math.floor((ra_high + (360.0 if wraps else 0.0)) / width)
        for column in sorted({c % per_row for c in range(first, last + 1)}):
            cell = cell_sources(model, row, column)
            ra = cell.ra
            inside = (cell.dec >= dec_low) & (cell.dec <= dec_high)
            if wraps:
                inside &= (ra >= ra_low) | (ra <= ra_high)
            else:
                inside &= (ra >= ra_low) & (ra <= ra_high)
            parts.append(cell.take(inside))
    return _concat(parts)

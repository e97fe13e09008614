"""A survey's tiles and which of them an exposure touches.

A grid (``[[grids]]``) lays rows of tile centres ``row_step`` degrees apart in declination,
from each field's ``dec_min`` up to the first at or beyond ``dec_max``; along a row the
centres are ``row_step / cos(dec)`` degrees apart in RA from ``ra_min`` up to the first at
or beyond ``ra_max`` (a field with ``ra_min`` above ``ra_max`` crosses 0h), so the tiles
cover the whole field and neighbours overlap alike on the sky at every declination.

An exposure touches a tile when their boxes overlap: the exposure's is ``exposure_size``
degrees on its own tangent plane, the tile's ``tile_size``; the test projects the tile's
centre on the exposure's plane (gnomonic), which for boxes of a degree or two is exact to a
fraction of an arcsecond. An exposure centred on the corner shared by four tiles overlaps
all four. Lookups go by row and column, so thousands of exposures cost milliseconds.

Names follow TERAPIX: ``<prefix>_<survey>_<filter letter>_<HHMMSS><±DDMMSS>`` then the
release (``CFHTLS_W_u_021410-041200_T0003``), RA and Dec of the centre rounded to whole
seconds, the sign of the declination always written (``-001200``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from spica_core.config import TileFieldConfig, TileGridConfig
from spica_core.names import validate_name

#: MegaCam filters whose TERAPIX letter is not the first of their name (the second i).
_LETTERS = {"i.MP9702": "y"}
#: Declination (deg) beyond which RA steps stop shrinking: rows near a pole are one tile.
_POLE = 89.0


def filter_letter(name: str) -> str:
    """The letter of a filter in tile names: ``u.MP9301`` → ``u``, ``i.MP9702`` → ``y``; a
    bare letter stays itself."""
    return _LETTERS.get(name, name.split(".", 1)[0])


def sexagesimal(ra: float, dec: float) -> str:
    """``021410-041200``: RA (hours) and Dec of a centre, whole seconds, signed Dec."""
    seconds = round((ra % 360.0) / 15.0 * 3600.0) % 86400
    hh, rest = divmod(seconds, 3600)
    mm, ss = divmod(rest, 60)
    arcsec = round(dec * 3600.0)
    sign = "-" if arcsec < 0 else "+"
    dd, rest = divmod(abs(arcsec), 3600)
    dm, ds = divmod(rest, 60)
    return f"{hh:02d}{mm:02d}{ss:02d}{sign}{dd:02d}{dm:02d}{ds:02d}"


def tile_key(grid: TileGridConfig, letter: str, ra: float, dec: float) -> str:
    """The stack's name without its release: what releases are compared on."""
    return validate_name(f"{grid.prefix}_{grid.survey}_{letter}_{sexagesimal(ra, dec)}")


def stack_name(key: str, release: str) -> str:
    """``CFHTLS_W_u_021410-041200_T0003``; in image mode ``805282p_V0003``."""
    return validate_name(f"{key}_{release}")


@dataclass(frozen=True)
class Tile:
    """A tile centre of the grid: field, row and column, position (deg)."""

    field: str
    row: int
    column: int
    ra: float
    dec: float

    def key(self, grid: TileGridConfig, letter: str) -> str:
        return tile_key(grid, letter, self.ra, self.dec)


@dataclass(frozen=True)
class _Row:
    field: str
    index: int
    dec: float
    ra_min: float
    #: RA step (deg) and number of centres.
    step: float
    columns: int


def _ra_span(field: TileFieldConfig) -> float:
    if field.ra_min > field.ra_max:
        return field.ra_max + 360.0 - field.ra_min
    return field.ra_max - field.ra_min


def _ra_step(row_step: float, dec: float) -> float:
    return min(360.0, row_step / math.cos(math.radians(min(abs(dec), _POLE))))


def _rows(grid: TileGridConfig) -> list[_Row]:
    rows: list[_Row] = []
    eps = 1e-9
    for field in grid.fields:
        span_dec = field.dec_max - field.dec_min
        count = math.ceil(span_dec / grid.row_step - eps) + 1
        span_ra = _ra_span(field)
        for index in range(count):
            dec = field.dec_min + index * grid.row_step
            step = _ra_step(grid.row_step, dec)
            columns = math.ceil(span_ra / step - eps) + 1
            if span_ra >= 360.0 - eps:  # a whole circle: the last centre would be the first
                columns = max(1, math.ceil(360.0 / step - eps))
            rows.append(_Row(field.name, index, dec, field.ra_min, step, columns))
    return rows


def _project(ra0: float, dec0: float, ra: float, dec: float) -> tuple[float, float] | None:
    """(x, y) in degrees of (ra, dec) on the tangent plane at (ra0, dec0); None when on the
    far side of the sky."""
    a0, d0 = math.radians(ra0), math.radians(dec0)
    a, d = math.radians(ra), math.radians(dec)
    cos_c = math.sin(d0) * math.sin(d) + math.cos(d0) * math.cos(d) * math.cos(a - a0)
    if cos_c <= 1e-6:
        return None
    x = math.cos(d) * math.sin(a - a0) / cos_c
    y = (math.cos(d0) * math.sin(d) - math.sin(d0) * math.cos(d) * math.cos(a - a0)) / cos_c
    return math.degrees(x), math.degrees(y)


def boxes_overlap(ra0: float, dec0: float, ra: float, dec: float, half: float) -> bool:
    """Whether a box centred on (ra, dec) overlaps the one on (ra0, dec0), ``half`` being
    the sum of their half sides (deg)."""
    xy = _project(ra0, dec0, ra, dec)
    return xy is not None and abs(xy[0]) < half and abs(xy[1]) < half


class TileGrid:
    """The tiles of a grid and the lookup of those an exposure touches."""

    def __init__(self, grid: TileGridConfig) -> None:
        self.config = grid
        self._rows = _rows(grid)
        #: Half the sum of an exposure's and a tile's sides: the reach of an overlap.
        self.reach = (grid.exposure_size + grid.tile_size) / 2.0

    def __iter__(self) -> Iterator[Tile]:
        for row in self._rows:
            for column in range(row.columns):
                yield self._tile(row, column)

    def __len__(self) -> int:
        return sum(row.columns for row in self._rows)

    @staticmethod
    def _tile(row: _Row, column: int) -> Tile:
        return Tile(row.field, row.index, column, (row.ra_min + column * row.step) % 360.0, row.dec)

    def touched_by(self, ra: float, dec: float) -> list[Tile]:
        """The tiles an exposure pointed at (ra, dec) overlaps."""
        reach = self.reach
        found: list[Tile] = []
        # Rows within reach in Dec (a margin for the tangent plane's stretch off-centre).
        for row in self._rows:
            if abs(row.dec - dec) >= reach * 1.05 + 1e-9:
                continue
            far = min(_POLE, max(abs(row.dec), abs(dec)) + reach)
            width = min(360.0, reach * 1.05 / math.cos(math.radians(far)))
            offset = (ra - row.ra_min) % 360.0
            seen: set[int] = set()
            for base in (offset - 360.0, offset, offset + 360.0):
                low = math.floor((base - width) / row.step)
                high = math.ceil((base + width) / row.step)
                for column in range(max(0, low), min(row.columns - 1, high) + 1):
                    if column in seen:
                        continue
                    seen.add(column)
                    tile = self._tile(row, column)
                    if boxes_overlap(ra, dec, tile.ra, tile.dec, reach):
                        found.append(tile)
        return found

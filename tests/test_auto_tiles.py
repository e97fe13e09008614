"""Tile grids: names, rows and RA steps, which tiles an exposure touches (corners, 0h,
negative declinations), filter letters and image-mode names.

Positions checked against astropy's own angles and separations, not SPICA's arithmetic.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from hypothesis import given, settings
from hypothesis import strategies as st

from spica_core.auto.tiles import (
    Tile,
    TileGrid,
    filter_letter,
    sexagesimal,
    stack_name,
    tile_key,
)
from spica_core.config import TileFieldConfig, TileGridConfig
from spica_core.errors import InvalidName


def grid(**fields: tuple[float, float, float, float]) -> TileGridConfig:
    """Tiles of 1 deg (3600 px of 1"), rows 1 deg apart: corners meet exactly."""
    return TileGridConfig(
        name="g",
        prefix="CFHTLS",
        survey="W",
        tile_pixels=3600,
        pixel_scale=1.0,
        row_step=1.0,
        exposure_size=0.2,
        fields=[
            TileFieldConfig(name=n, ra_min=a, ra_max=b, dec_min=c, dec_max=d)
            for n, (a, b, c, d) in fields.items()
        ],
    )


def keys(tiles: list) -> set[tuple[float, float]]:  # type: ignore[type-arg]
    return {(round(t.ra, 6), round(t.dec, 6)) for t in tiles}


def test_the_seed_name_of_a_cfhtls_tile() -> None:
    ra = Angle("02h14m10s").degree
    dec = Angle("-04d12m00s").degree
    cfhtls = TileGridConfig(name="w", survey="W")
    assert tile_key(cfhtls, "u", ra, dec) == "CFHTLS_W_u_021410-041200"
    assert stack_name(tile_key(cfhtls, "u", ra, dec), "T0003") == "CFHTLS_W_u_021410-041200_T0003"


@pytest.mark.parametrize(
    ("ra", "dec", "expected"),
    [
        (0.0, 0.0, "000000+000000"),
        (359.9999999, 10.0, "000000+100000"),  # rounds to 24h: wraps to 0h
        (15.0, -0.2, "010000-001200"),  # -00:12:00 keeps its sign
        (15.0, -0.0001, "010000+000000"),  # rounds to zero: no negative zero
        (180.0, -89.5, "120000-893000"),
        (37.5, 45.25, "023000+451500"),
    ],
)
def test_sexagesimal_whole_seconds_and_signs(ra: float, dec: float, expected: str) -> None:
    assert sexagesimal(ra, dec) == expected


@given(st.floats(0, 359.99), st.floats(-89.9, 89.9))
def test_sexagesimal_agrees_with_astropy(ra: float, dec: float) -> None:
    text = sexagesimal(ra, dec)
    back_ra = Angle(f"{text[0:2]}h{text[2:4]}m{text[4:6]}s").degree
    back_dec = Angle(f"{text[6]}{text[7:9]}d{text[9:11]}m{text[11:13]}s").degree
    gap_ra = abs((back_ra - ra + 180) % 360 - 180) * 3600 / 15  # seconds of time
    assert gap_ra <= 0.5 + 1e-6
    assert abs(back_dec - dec) * 3600 <= 0.5 + 1e-6
    if round(dec * 3600) < 0:
        assert text[6] == "-"


@pytest.mark.parametrize(
    ("name", "letter"),
    [
        ("u.MP9301", "u"),
        ("g.MP9401", "g"),
        ("r.MP9601", "r"),
        ("i.MP9701", "i"),
        ("i.MP9702", "y"),
        ("z.MP9801", "z"),
        ("y", "y"),
        ("r", "r"),
    ],
)
def test_filter_letters(name: str, letter: str) -> None:
    assert filter_letter(name) == letter


def test_image_mode_names() -> None:
    assert stack_name("805282p", "V0003") == "805282p_V0003"
    with pytest.raises(InvalidName):
        stack_name("805282p/../x", "V0003")


def test_rows_and_ra_steps_follow_the_declination() -> None:
    cfhtls = TileGridConfig(
        name="w", fields=[TileFieldConfig(name="W1", ra_min=30, ra_max=39, dec_min=-11.2,
                                          dec_max=-3.7)],
    )  # fmt: skip
    tiles = list(TileGrid(cfhtls))
    decs = sorted({round(t.dec, 9) for t in tiles})
    assert decs[0] == pytest.approx(-11.2)
    assert decs[-2] < -3.7 <= decs[-1]  # the field covered, one row at most beyond
    assert all(b - a == pytest.approx(56 / 60) for a, b in itertools.pairwise(decs))
    for dec in decs:
        row = sorted(t.ra for t in tiles if round(t.dec, 9) == dec)
        assert row[0] == pytest.approx(30.0) and row[-2] < 39.0 <= row[-1] + 1e-9
        step = (56 / 60) / math.cos(math.radians(dec))
        assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(row))
        # Neighbours in a row are 56' apart on the sky, whatever the declination.
        a, b = SkyCoord(row[0] * u.deg, dec * u.deg), SkyCoord(row[1] * u.deg, dec * u.deg)
        assert a.separation(b).arcmin == pytest.approx(56.0, rel=1e-3)
    assert len(TileGrid(cfhtls)) == len(tiles)


def test_an_exposure_on_a_corner_belongs_to_the_four_tiles() -> None:
    g = TileGrid(grid(F=(10.0, 14.0, 0.0, 3.0)))
    # Row 0 (Dec 0) has centres 1 deg apart from RA 10; rows 1 and 2 a little more (cos).
    corner_ra, corner_dec = 10.5, 0.5
    touched = g.touched_by(corner_ra, corner_dec)
    assert len(touched) == 4
    assert {round(t.dec, 6) for t in touched} == {0.0, 1.0}
    # At a tile centre (small exposure, tiles abutting): that tile alone.
    assert keys(g.touched_by(12.0, 0.0)) == {(12.0, 0.0)}
    # Outside the field and its tiles' reach: none.
    assert g.touched_by(20.0, 0.0) == []
    assert g.touched_by(12.0, -1.0) == []


def test_ra_wrap_at_0h() -> None:
    g = TileGrid(grid(F=(358.0, 2.0, 0.0, 0.0)))
    ras = sorted(round(t.ra, 6) for t in g)
    assert ras == [0.0, 1.0, 2.0, 358.0, 359.0]
    # An exposure at 0h between the tiles at 359 and 0 belongs to both.
    assert keys(g.touched_by(359.5, 0.0)) == {(359.0, 0.0), (0.0, 0.0)}
    assert keys(g.touched_by(0.05, 0.0)) == {(0.0, 0.0)}
    assert keys(g.touched_by(359.95, 0.0)) == {(0.0, 0.0)}
    names = {t.key(g.config, "r") for t in g.touched_by(359.5, 0.0)}
    assert names == {"CFHTLS_W_r_235600+000000", "CFHTLS_W_r_000000+000000"}


def test_negative_declinations_keep_their_sign() -> None:
    g = TileGrid(grid(F=(30.0, 31.0, -0.5, -0.5)))
    tiles = g.touched_by(30.0, -0.5)
    assert {t.key(g.config, "g") for t in tiles} == {"CFHTLS_W_g_020000-003000"}


def test_a_whole_circle_has_no_duplicate_column() -> None:
    g = TileGrid(grid(F=(0.0, 360.0, 0.0, 0.0)))
    ras = [round(t.ra, 6) for t in g]
    assert len(ras) == len(set(ras)) == 360


_OVERLAP_GRID = TileGridConfig(
    name="g", tile_pixels=3600, pixel_scale=1.0, row_step=0.9, exposure_size=1.0,
    fields=[TileFieldConfig(name="F", ra_min=0, ra_max=360, dec_min=-62, dec_max=62)],
)  # fmt: skip


@functools.cache
def _overlap_grid() -> tuple[TileGrid, list[Tile], np.ndarray]:
    """The grid, its tiles and their declinations: built once for every example."""
    g = TileGrid(_OVERLAP_GRID)
    tiles = list(g)
    return g, tiles, np.array([t.dec for t in tiles])


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 359.999), st.floats(-60, 60))
def test_touched_tiles_are_those_whose_box_overlaps(ra: float, dec: float) -> None:
    """Against a brute force over every nearby tile, projected by astropy's WCS on the
    exposure's tangent plane: each tile well inside reach is found, none well outside."""
    from astropy.wcs import WCS

    g, every, decs = _overlap_grid()
    found = keys(g.touched_by(ra, dec))
    tiles = [every[i] for i in np.flatnonzero(np.abs(decs - dec) < 3)]
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [1, 1]
    wcs.wcs.cdelt = [-1, 1]  # one "pixel" per degree
    x, y = wcs.wcs_world2pix(np.array([t.ra for t in tiles]), np.array([t.dec for t in tiles]), 1)
    for tile, dx, dy in zip(tiles, np.abs(x - 1), np.abs(y - 1), strict=True):
        key = (round(tile.ra, 6), round(tile.dec, 6))
        if dx < 0.999 and dy < 0.999:
            assert key in found
        if dx > 1.001 or dy > 1.001:
            assert key not in found

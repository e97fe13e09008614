"""What a synthetic MegaCam exposure's headers say: the observation and the focal plane.

The focal plane is MegaCam's: 36 CCDs of 2048 x 4612 pixels at 0.187"/pixel in 4 rows of 9,
about one degree square. A CCD of a smaller shape (tests use 32 x 32) keeps its place and
size on the sky; only its pixels grow. With ``pixel_scale`` set (e.g. :data:`NATIVE_SCALE`)
a small CCD is instead a cut-out of that scale from the CCD's centre, so a seeing-limited
PSF is sampled as MegaCam samples it (what QFin measures). Headers are plain
``(keyword, value, comment)`` cards so this module needs no FITS library;
:mod:`spica_core.synth.writer` turns them into HDUs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: MegaCam's CCDs: columns x rows, native pixels, and scale (arcsec / pixel).
COLUMNS, ROWS = 9, 4
NATIVE_SHAPE = (4612, 2048)  # (ny, nx)
NATIVE_SCALE = 0.187
#: Gaps between CCDs on the sky (arcsec): narrow between columns, wide between rows.
GAP_X, GAP_Y = 13.0, 80.0
CCDS = COLUMNS * ROWS

#: MegaCam's filter names (the second i filter replaced the first in 2007).
FILTERS = ("u.MP9301", "g.MP9401", "r.MP9601", "i.MP9701", "i.MP9702", "z.MP9801")
#: Zero points (PHOT_C, mag) and extinction (PHOT_K, mag / airmass) per filter, as Elixir
#: writes them; only their order of magnitude matters here.
PHOTOMETRY = {
    "u.MP9301": (25.74, 0.35),
    "g.MP9401": (26.50, 0.15),
    "r.MP9601": (26.23, 0.10),
    "i.MP9701": (25.97, 0.04),
    "i.MP9702": (26.05, 0.04),
    "z.MP9801": (24.85, 0.03),
}

Card = tuple[str, str | int | float | bool, str]

_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)


def mjd(when: datetime) -> float:
    """Modified Julian Date of a UTC time (tests check it against astropy.time)."""
    return (when - _MJD_EPOCH).total_seconds() / 86400.0


def sexagesimal(value: float, *, hours: bool, decimals: int) -> str:
    """``value`` degrees as ``hh:mm:ss.ss`` (hours) or ``+dd:mm:ss.s``, as CFHT writes them."""
    sign = "-" if value < 0 else "+"
    units = abs(value) / 15.0 if hours else abs(value)
    scale = 10**decimals
    total = round(units * 3600 * scale)  # in 1/scale seconds, rounded once
    if hours:
        total %= 24 * 3600 * scale  # 23:59:59.999 rounds to 00:00:00.00, not 24:00
    whole, frac = divmod(total, scale)
    minutes, seconds = divmod(whole, 60)
    degrees, minutes = divmod(minutes, 60)
    text = f"{degrees:02d}:{minutes:02d}:{seconds:02d}"
    if decimals:
        text += f".{frac:0{decimals}d}"
    return text if hours else sign + text


@dataclass(frozen=True)
class ExposureSpec:
    """One exposure as the telescope would have described it."""

    #: CFHT odometer number and its letter: ``p`` Elixir-processed, ``o`` raw.
    filename: str
    runid: str
    qrunid: str
    filter: str
    object: str
    ra_deg: float
    dec_deg: float
    exptime: float
    start: datetime
    airmass: float
    #: CCD shape (ny, nx) of the written extensions, and how many CCDs (MegaCam: 36).
    ccd_shape: tuple[int, int] = (32, 32)
    ccds: int = CCDS
    #: Per-CCD gain (e-/ADU) and saturation (ADU), written in the extensions only.
    gains: tuple[float, ...] = ()
    saturate: float = 65535.0
    #: Read noise (e-), the extensions' RDNOISE.
    read_noise: float = 5.0
    #: Pixel scale (arcsec / pixel) of the written CCDs: None stretches each CCD's whole
    #: area over ``ccd_shape``; a value cuts ``ccd_shape`` pixels of that scale from the
    #: CCD's centre.
    pixel_scale: float | None = None
    #: Seeing: the Moffat PSF's FWHM (arcsec; None: a default drawn from the filename in
    #: 0.6-1.4) and its beta.
    fwhm: float | None = None
    beta: float = 3.0
    #: The PSF's axis ratio (SExtractor's ELONGATION, 1: round) and its major axis's angle
    #: (degrees east of north): guiding lost along one axis.
    elongation: float = 1.0
    psf_angle: float = 0.0
    #: Sky background (ADU / pixel); None: the filter's dark sky for the exposure time.
    sky: float | None = None
    #: How far the headers' pointing is from the true one (arcsec, east and north);
    #: None: a default of a few arcsec drawn from the filename.
    pointing_error: tuple[float, float] | None = None
    #: Cards to change in the primary header: a value replaces (or adds) the card, None
    #: removes it. This is how tests make a header a real pipeline would have to refuse.
    overrides: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)
    #: The same for CCD extensions, by CCD index (e.g. ``{2: {"CTYPE1": None}}``: no WCS).
    ccd_overrides: Mapping[int, Mapping[str, str | int | float | bool | None]] = field(
        default_factory=dict
    )
    #: CCDs read out as all zeros (a dead amplifier), whatever the pixel source draws.
    dead_ccds: frozenset[int] = frozenset()
    #: Where each CCD's centre sits from the pointing (arcsec, x along -RA, y along +Dec), by
    #: index; empty: MegaCam's focal plane. A compact block (:func:`compact_offsets`) puts an
    #: exposure's few small CCDs about its pointing, where a footprint box says they are.
    ccd_offsets: tuple[tuple[float, float], ...] = ()

    def gain(self, ccd: int) -> float:
        return self.gains[ccd % len(self.gains)] if self.gains else 1.6


def primary_cards(spec: ExposureSpec) -> list[Card]:
    """The primary header's cards (beyond the structural ones), with ``overrides`` applied."""
    phot_c, phot_k = PHOTOMETRY.get(spec.filter, (26.0, 0.1))
    start = spec.start.astimezone(UTC)
    cards: list[Card] = [
        ("FILENAME", spec.filename, "Base filename at acquisition"),
        ("NEXTEND", spec.ccds, "Number of extensions"),
        ("TELESCOP", "CFHT 3.6m", "Canada-France-Hawaii Telescope"),
        ("INSTRUME", "MegaPrime", "Instrument"),
        ("DETECTOR", "MegaCam", "Science detector"),
        ("RUNID", spec.runid, "Run identification"),
        ("QRUNID", spec.qrunid, "Queue run identification"),
        ("OBSTYPE", "OBJECT", "Observation / Exposure type"),
        ("EXPNUM", int(spec.filename.rstrip("op") or 0), "CFHT odometer number"),
        ("OBJECT", spec.object, "Object name (pointing)"),
        ("FILTER", spec.filter, "MegaPrime filter"),
        ("EXPTIME", spec.exptime, "Integration time (seconds)"),
        ("DATE-OBS", start.strftime("%Y-%m-%d"), "Date at start of observation (UTC)"),
        ("UTC-OBS", start.strftime("%H:%M:%S.") + f"{start.microsecond // 10000:02d}", "UTC"),
        ("MJD-OBS", round(mjd(start), 8), "Modified Julian Date at start"),
        ("RA", sexagesimal(spec.ra_deg, hours=True, decimals=2), "Telescope RA"),
        ("DEC", sexagesimal(spec.dec_deg, hours=False, decimals=1), "Telescope DEC"),
        ("RA_DEG", round(spec.ra_deg, 6), "Telescope RA (degrees)"),
        ("DEC_DEG", round(spec.dec_deg, 6), "Telescope DEC (degrees)"),
        ("EQUINOX", 2000.0, "Equinox of coordinates"),
        ("RADECSYS", "FK5", "Coordinate system"),
        ("AIRMASS", round(spec.airmass, 3), "Airmass at start"),
        ("PHOT_C", phot_c, "Photometric zero point (Elixir)"),
        ("PHOT_K", phot_k, "Extinction coefficient (mag / airmass)"),
    ]
    return _overridden(cards, spec.overrides)


def _overridden(
    cards: list[Card], overrides: Mapping[str, str | int | float | bool | None]
) -> list[Card]:
    """``cards`` with ``overrides`` applied: a value replaces (or adds) a card, None removes
    it."""
    by_key = {key: i for i, (key, _, _) in enumerate(cards)}
    for key, value in overrides.items():
        if key in by_key:
            _, _, comment = cards[by_key[key]]
            cards[by_key[key]] = (key, value, comment) if value is not None else ("", "", "")
        elif value is not None:
            cards.append((key, value, ""))
    return [card for card in cards if card[0]]


@dataclass(frozen=True)
class CcdGeometry:
    """Where CCD ``index`` sits: its offset from the pointing and its pixel scale."""

    index: int
    #: Centre offset from the pointing on the tangent plane (arcsec, x along -RA, y +DEC).
    x_offset: float
    y_offset: float
    #: Pixel scale (arcsec / pixel) along x and y for the written shape.
    scale_x: float
    scale_y: float


def ccd_geometry(
    index: int,
    shape: tuple[int, int],
    scale: float | None = None,
    offsets: tuple[tuple[float, float], ...] = (),
) -> CcdGeometry:
    """CCD ``index`` (0..35, row-major from the south-east corner) for pixels of ``shape``:
    stretched over the whole CCD, or of ``scale`` (arcsec / pixel) about its centre; at
    ``offsets[index]`` from the pointing when ``offsets`` are given."""
    ny, nx = shape
    column, row = index % COLUMNS, index // COLUMNS
    width = NATIVE_SHAPE[1] * NATIVE_SCALE
    height = NATIVE_SHAPE[0] * NATIVE_SCALE
    x_offset = (column - (COLUMNS - 1) / 2) * (width + GAP_X)
    y_offset = (row - (ROWS - 1) / 2) * (height + GAP_Y)
    if offsets:
        x_offset, y_offset = offsets[index]
    return CcdGeometry(
        index=index,
        x_offset=x_offset,
        y_offset=y_offset,
        scale_x=width / nx if scale is None else scale,
        scale_y=height / ny if scale is None else scale,
    )


def compact_offsets(
    columns: int, rows: int, shape: tuple[int, int], scale: float, gap: float = 0.0
) -> tuple[tuple[float, float], ...]:
    """CCD centres (arcsec from the pointing) of a block of ``columns`` x ``rows`` CCDs of
    ``shape`` pixels at ``scale``, ``gap`` arcsec apart, centred on the pointing: a small
    mosaic whose whole footprint is the box about its pointing."""
    ny, nx = shape
    step_x, step_y = nx * scale + gap, ny * scale + gap
    return tuple(
        ((c - (columns - 1) / 2) * step_x, (r - (rows - 1) / 2) * step_y)
        for r in range(rows)
        for c in range(columns)
    )


def ccd_cards(spec: ExposureSpec, index: int) -> list[Card]:
    """An image extension's cards: its name, detector keys and the headers' TAN WCS (at the
    pointing the telescope reported, see :func:`wcs_cards`), with ``ccd_overrides``."""
    ny, nx = spec.ccd_shape
    cards: list[Card] = [
        ("EXTNAME", f"ccd{index:02d}", "Extension name"),
        ("CCDNUM", index, "CCD number"),
        ("DETSIZE", f"[1:{nx * COLUMNS},1:{ny * ROWS}]", "Mosaic size"),
        ("GAIN", spec.gain(index), "Amplifier gain (e-/ADU)"),
        ("SATURATE", spec.saturate, "Saturation level (ADU)"),
        ("RDNOISE", spec.read_noise, "Read noise (e-)"),
        *wcs_cards(spec, index, spec.ra_deg, spec.dec_deg),
    ]
    return _overridden(cards, spec.ccd_overrides.get(index, {}))


def wcs_cards(spec: ExposureSpec, index: int, ra_deg: float, dec_deg: float) -> list[Card]:
    """CCD ``index``'s TAN WCS for a tangent point at (``ra_deg``, ``dec_deg``).

    The WCS puts the pointing (CRVAL) at the tangent point for every CCD and moves CRPIX off
    the CCD by its offset, as a camera's astrometric solution does before distortion. The
    headers use the reported pointing; the pixels are drawn at the true one.
    """
    ny, nx = spec.ccd_shape
    geom = ccd_geometry(index, spec.ccd_shape, spec.pixel_scale, spec.ccd_offsets)
    crpix1 = (nx + 1) / 2 - geom.x_offset / geom.scale_x
    crpix2 = (ny + 1) / 2 - geom.y_offset / geom.scale_y
    return [
        ("EQUINOX", 2000.0, "Equinox of WCS"),
        ("RADESYS", "ICRS", "WCS frame"),
        ("CTYPE1", "RA---TAN", "Gnomonic projection"),
        ("CTYPE2", "DEC--TAN", "Gnomonic projection"),
        ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
        ("CRVAL1", ra_deg, "RA at the tangent point (deg)"),
        ("CRVAL2", dec_deg, "DEC at the tangent point (deg)"),
        ("CRPIX1", round(crpix1, 3), "Tangent point, x (pixel)"),
        ("CRPIX2", round(crpix2, 3), "Tangent point, y (pixel)"),
        ("CD1_1", -geom.scale_x / 3600.0, "Pixel to sky (deg / pixel)"),
        ("CD1_2", 0.0, ""),
        ("CD2_1", 0.0, ""),
        ("CD2_2", geom.scale_y / 3600.0, ""),
    ]


def pointing_name(field: int, x: int, y: int) -> str:
    """A CFHTLS Wide pointing name: field ``w1`` and the index in its grid, e.g. ``w1.+1-1``."""
    return f"w{field}.{x:+d}{y:+d}"


def pointing_centre(field_ra: float, field_dec: float, x: int, y: int) -> tuple[float, float]:
    """Centre (deg) of grid pointing (x, y) around a field centre, one degree apart."""
    dec = field_dec + y * 1.0
    ra = (field_ra + x * 1.0 / math.cos(math.radians(dec))) % 360.0
    return ra, dec

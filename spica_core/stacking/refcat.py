"""A release's astrometric reference catalogue, as the FITS_LDAC SCAMP reads offline.

``scamp … -ASTREF_CATALOG FILE -ASTREFCAT_NAME ref.ldac`` wants a FITS_LDAC file: an empty
primary HDU, an ``LDAC_IMHEAD`` table whose single ``Field Header Card`` cell holds an image
header's 80-column cards (SCAMP writes a dummy one with the field's WCS, as here), then an
``LDAC_OBJECTS`` table with the keys of SCAMP's ``ASTREF*_KEYS`` defaults: ``X_WORLD``,
``Y_WORLD`` (deg, double), ``ERRA_WORLD``, ``ERRB_WORLD`` (deg), ``ERRTHETA_WORLD`` (deg),
``MAG``, ``MAGERR``, ``OBSDATE`` (epoch in years) and ``FLAGS``.

A release names its catalogue as FITS_LDAC (used as it is), a FITS table or CSV. Tables
need columns ``ra``, ``dec`` (deg) and ``mag`` (any case); optional ``pos_err`` (or
``ra_err`` / ``dec_err``, the larger taken; arcsec per axis), ``mag_err`` (or ``magerr``)
and ``obsdate`` (years). Missing errors default to :data:`DEFAULT_POS_ERR` and
:data:`DEFAULT_MAG_ERR`. The conversion is cached under the source's checksum, so a release
converts its catalogue once and a changed file is converted again.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spica_core.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from astropy.io import fits

#: Errors given to references whose table has none: arcsec per axis, mag.
DEFAULT_POS_ERR = 0.05
DEFAULT_MAG_ERR = 0.03
DEFAULT_OBSDATE = 2000.0
#: Pixel scale (arcsec) of the dummy field header.
_IMHEAD_SCALE = 0.2

_COLUMNS: dict[str, tuple[str, ...]] = {
    "ra": ("ra", "ra_deg", "alpha_j2000"),
    "dec": ("dec", "dec_deg", "delta_j2000"),
    "mag": ("mag",),
    "pos_err": ("pos_err", "poserr"),
    "ra_err": ("ra_err", "raerr"),
    "dec_err": ("dec_err", "decerr"),
    "mag_err": ("mag_err", "magerr"),
    "obsdate": ("obsdate", "epoch"),
}


class RefcatError(UsageError):
    """A reference catalogue that cannot be read: names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        self.path = str(path)
        super().__init__(f"reference catalogue {path}: {why}")


@dataclass(frozen=True)
class Reference:
    """The catalogue's columns (numpy arrays), errors as 1-sigma."""

    ra: np.ndarray
    dec: np.ndarray
    #: Positional error per axis (arcsec).
    error: np.ndarray
    mag: np.ndarray
    magerr: np.ndarray
    obsdate: float | np.ndarray


def extent(reference: Reference) -> tuple[tuple[float, float], float]:
    """Centre (RA, Dec) and radius (deg) of the region the references cover."""
    import numpy as np

    if len(reference.ra) == 0:
        return (0.0, 0.0), 0.0
    ra = np.radians(reference.ra)
    dec = np.radians(reference.dec)
    x = np.mean(np.cos(dec) * np.cos(ra))
    y = np.mean(np.cos(dec) * np.sin(ra))
    z = np.mean(np.sin(dec))
    ra0 = math.degrees(math.atan2(y, x)) % 360.0
    dec0 = math.degrees(math.atan2(z, math.hypot(x, y)))
    cos_sep = np.sin(dec) * math.sin(math.radians(dec0)) + np.cos(dec) * math.cos(
        math.radians(dec0)
    ) * np.cos(ra - math.radians(ra0))
    radius = math.degrees(float(np.arccos(np.clip(cos_sep, -1.0, 1.0)).max()))
    return (ra0, dec0), max(radius, 1.0 / 60.0)


def _imhead_cards(centre: tuple[float, float], radius: float) -> str:
    """A dummy image header covering the region (SCAMP writes one like it), as card text."""
    from astropy.io import fits

    scale = _IMHEAD_SCALE / 3600.0
    size = max(1, math.ceil(2 * radius / scale))
    header = fits.Header(
        [
            ("SIMPLE", True, ""),
            ("BITPIX", 0, ""),
            ("NAXIS", 2, ""),
            ("NAXIS1", size, ""),
            ("NAXIS2", size, ""),
            ("EQUINOX", 2000.0, ""),
            ("RADESYS", "ICRS", ""),
            ("CTYPE1", "RA---STG", ""),
            ("CTYPE2", "DEC--STG", ""),
            ("CRVAL1", centre[0], ""),
            ("CRVAL2", centre[1], ""),
            ("CRPIX1", (size + 1) / 2, ""),
            ("CRPIX2", (size + 1) / 2, ""),
            ("CDELT1", -scale, ""),
            ("CDELT2", scale, ""),
        ]
    )
    return str(header.tostring(sep="", endcard=True, padding=False))


def reference_hdus(
    reference: Reference,
    centre: tuple[float, float] | None = None,
    radius: float | None = None,
) -> fits.HDUList:
    """The catalogue as FITS_LDAC HDUs (see the module's docstring); the field header
    covers ``radius`` degrees about ``centre`` (default: the references' own extent)."""
    import numpy as np
    from astropy.io import fits

    if centre is None or radius is None:
        centre, radius = extent(reference)
    text = _imhead_cards(centre, radius)
    cards = len(text) // 80
    imhead = fits.BinTableHDU.from_columns(
        [
            fits.Column(
                "Field Header Card",
                f"{80 * cards}A",
                dim=f"(80, {cards})",
                array=np.array([[text[i : i + 80] for i in range(0, len(text), 80)]]),
            )
        ],
        name="LDAC_IMHEAD",
    )
    degrees = np.asarray(reference.error, dtype=float) / 3600.0
    n = len(reference.ra)
    objects = fits.BinTableHDU.from_columns(
        [
            fits.Column("X_WORLD", "D", unit="deg", array=reference.ra),
            fits.Column("Y_WORLD", "D", unit="deg", array=reference.dec),
            fits.Column("ERRA_WORLD", "E", unit="deg", array=degrees),
            fits.Column("ERRB_WORLD", "E", unit="deg", array=degrees),
            fits.Column("ERRTHETA_WORLD", "E", unit="deg", array=np.zeros(n)),
            fits.Column("MAG", "E", unit="mag", array=reference.mag),
            fits.Column("MAGERR", "E", unit="mag", array=reference.magerr),
            fits.Column("OBSDATE", "D", unit="yr", array=np.broadcast_to(reference.obsdate, (n,))),
            fits.Column("FLAGS", "I", array=np.zeros(n, dtype=np.int16)),
        ],
        name="LDAC_OBJECTS",
    )
    return fits.HDUList([fits.PrimaryHDU(), imhead, objects])


# --------------------------------------------------------------------------- reading


def is_ldac(path: Path) -> bool:
    """A FITS file with an ``LDAC_OBJECTS`` table (SCAMP reads it as it is)."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdus:
            return any(hdu.name == "LDAC_OBJECTS" for hdu in hdus)
    except OSError:
        return False


def _is_fits(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(9) == b"SIMPLE  ="


def read_reference(path: str | os.PathLike[str]) -> Reference:
    """The references of a FITS table or CSV file (see the module's docstring);
    RefcatError naming the file and the column when one is missing or unparseable."""
    source = Path(path)
    try:
        columns = _fits_columns(source) if _is_fits(source) else _csv_columns(source)
    except OSError as exc:
        raise RefcatError(source, exc.strerror or str(exc)) from None
    return _reference(source, columns)


def _fits_columns(path: Path) -> dict[str, Any]:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdus:
            for hdu in hdus:
                if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
                    return {name.lower(): hdu.data[name].copy() for name in hdu.columns.names}
    except (ValueError, TypeError) as exc:
        raise RefcatError(path, f"not a readable FITS file ({exc})") from None
    raise RefcatError(path, "no table in this FITS file")


def _csv_columns(path: Path) -> dict[str, Any]:
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            sample = stream.read(4096)
            stream.seek(0)
            try:
                dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t ")
            except csv.Error:
                dialect = csv.excel
            rows = list(csv.reader(stream, dialect))
    except UnicodeDecodeError:
        raise RefcatError(path, "neither FITS nor UTF-8 text (CSV)") from None
    rows = [row for row in rows if row and not row[0].lstrip().startswith("#")]
    if not rows:
        raise RefcatError(path, "empty: a header line (ra, dec, mag …) is needed")
    header = [name.strip().lower() for name in rows[0]]
    columns: dict[str, list[str]] = {name: [] for name in header}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise RefcatError(
                path, f"line {number} has {len(row)} fields, the header {len(header)}"
            )
        for name, value in zip(header, row, strict=True):
            columns[name].append(value.strip())
    return columns


def _column(path: Path, columns: dict[str, Any], key: str, required: bool) -> Any:
    import numpy as np

    for name in _COLUMNS[key]:
        if name in columns:
            values = columns[name]
            try:
                array = np.asarray(values, dtype=float)
            except ValueError:
                bad = next(v for v in values if not _is_float(v))
                raise RefcatError(path, f"column {name}: {bad!r} is not a number") from None
            if not np.all(np.isfinite(array)):
                raise RefcatError(path, f"column {name}: a value is not finite")
            return array
    if required:
        have = ", ".join(sorted(columns)) or "none"
        raise RefcatError(path, f"no column {key} (columns: {have})")
    return None


def _is_float(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _reference(path: Path, columns: dict[str, Any]) -> Reference:
    import numpy as np

    ra = _column(path, columns, "ra", True)
    dec = _column(path, columns, "dec", True)
    mag = _column(path, columns, "mag", True)
    if len(ra) == 0:
        raise RefcatError(path, "no references (the table is empty)")
    if np.any((dec < -90) | (dec > 90)):
        raise RefcatError(path, "column dec: a value lies outside -90..90 deg")
    error = _column(path, columns, "pos_err", False)
    if error is None:
        parts = [
            p
            for p in (_column(path, columns, k, False) for k in ("ra_err", "dec_err"))
            if p is not None
        ]
        error = np.maximum.reduce(parts) if parts else np.full(len(ra), DEFAULT_POS_ERR)
    magerr = _column(path, columns, "mag_err", False)
    if magerr is None:
        magerr = np.full(len(ra), DEFAULT_MAG_ERR)
    obsdate = _column(path, columns, "obsdate", False)
    return Reference(
        ra % 360.0, dec, error, mag, magerr, DEFAULT_OBSDATE if obsdate is None else obsdate
    )


# --------------------------------------------------------------------------- the LDAC


def cache_dir() -> Path:
    """Where converted catalogues are kept (the user's cache)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("spica")) / "refcat"


def reference_ldac(
    source: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None
) -> tuple[Path, str]:
    """The FITS_LDAC to hand SCAMP for catalogue ``source`` and the source's checksum:
    the source itself when it is FITS_LDAC, else its conversion, cached under the
    checksum (written atomically)."""
    from spica_core.checksum import file_checksum

    path = Path(source)
    try:
        checksum, _ = file_checksum(path)
    except OSError as exc:
        raise RefcatError(path, exc.strerror or str(exc)) from None
    if _is_fits(path) and is_ldac(path):
        return path, checksum
    target = Path(cache if cache is not None else cache_dir()) / (
        f"{checksum.partition(':')[2]}.ldac"
    )
    if not target.is_file():
        write_ldac(target, read_reference(path))
    return target, checksum


def write_ldac(
    path: str | os.PathLike[str],
    reference: Reference,
    centre: tuple[float, float] | None = None,
    radius: float | None = None,
) -> Path:
    """Write ``reference`` as FITS_LDAC at ``path`` (atomically)."""
    from spica_core.synth.writer import hdus_bytes, replace_file

    return replace_file(path, hdus_bytes(reference_hdus(reference, centre, radius)))

"""The first line of a QFin unit: check the image, write its weight and flag maps.

source-extractor is told which pixels to ignore by two MEFs beside the outputs, one
extension per CCD: a weight map (1 good, 0 bad) and a flag map (bits below) for saturated,
zero or non-finite pixels, both 8-bit (a float weight map would be four times the bytes to
write for the same two values). The image is checked first — readable FITS, not truncated, no CCD
all zeros, a usable celestial WCS on every CCD — so a broken exposure fails here with a
message naming it and its CCD, before any tool runs and nothing of it is written. A
compressed MEF (``.fits.fz``, ``.fits.gz``) is unpacked beside the maps: source-extractor
reads plain FITS only.

Every unit runs this, so it streams: one CCD at a time is read (decompressed by cfitsio,
through ``fitsio``), checked, flagged and appended to the maps and the unpacked copy, then
dropped — memory is one CCD's, not the exposure's (a 36-CCD MegaCam exposure is 680 MB).
Pixels stay the integers stored in the file (flags are computed against thresholds moved
into the stored values' scale), headers are copied as their 80-byte cards and the pixels
as their big-endian bytes: no float conversion, no astropy import (most of a small unit's
time).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np

from spica_core.node.files import one_line
from spica_core.qfin.measure import FITS_BLOCK, QfinFailed
from spica_core.qfin.outputs import QfinOutputs

#: Flag map bits (FLAG_TYPE OR: a source touching such a pixel has them in IMAFLAGS_ISO).
FLAG_SATURATED = 1
FLAG_ZERO = 2
FLAG_NONFINITE = 4
#: A usable WCS has a pixel scale in this range (arcsec / pixel): anything else is a
#: placeholder or a broken solution.
MIN_SCALE, MAX_SCALE = 0.001, 600.0
#: Celestial axis pairs (the first four characters of CTYPEi) and projection codes (FITS
#: WCS paper II, with the TPV/TNX/ZPX distortion conventions SCAMP and IRAF write).
CELESTIAL_AXES = (("RA--", "DEC-"), ("GLON", "GLAT"), ("ELON", "ELAT"))
PROJECTIONS = frozenset(
    {"AZP", "SZP", "TAN", "STG", "SIN", "ARC", "ZPN", "ZEA", "AIR", "CYP", "CEA", "CAR", "MER",
     "COP", "COE", "COD", "COO", "SFL", "PAR", "MOL", "AIT", "BON", "PCO", "TSC", "CSC", "QSC",
     "HPX", "XPH", "TPV", "TNX", "ZPX"}
)  # fmt: skip
FITS_START = b"SIMPLE  ="
#: Granularity of the maps' sparse writing (bytes): a multiple of file systems' blocks.
SPARSE_CHUNK = 4096


#: Bytes of one header card, and the big-endian pixel type of each BITPIX.
CARD = 80
BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
#: Cards of a tile-compressed HDU's table header that describe the table or the
#: compression, not the image: the plain copy drops them and writes its own structure.
_COMPRESSION_KEYS = frozenset(
    {"XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "TFIELDS", "THEAP", "EXTEND",
     "CHECKSUM", "DATASUM", "ZIMAGE", "ZCMPTYPE", "ZBITPIX", "ZNAXIS", "ZMASKCMP", "ZQUANTIZ",
     "ZDITHER0", "ZSIMPLE", "ZTENSION", "ZEXTEND", "ZBLOCKED", "ZPCOUNT", "ZGCOUNT",
     "ZHECKSUM", "ZDATASUM", "END"}
)  # fmt: skip
_COMPRESSION_PREFIXES = ("NAXIS", "ZNAXIS", "ZTILE", "ZNAME", "ZVAL", "TTYPE", "TFORM",
                         "TUNIT", "TSCAL", "TZERO", "TNULL", "TDIM", "TDISP")  # fmt: skip
#: Read size when unpacking a gzip stream.
GZIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class MapPaths:
    """The maps written, and the MEF source-extractor reads (the image or its unpacked copy)."""

    weight: Path
    flag: Path
    sextractor_input: Path


def write_maps(image_path: Path, workdir: Path, *, image: str) -> MapPaths:
    """Check ``image_path`` and write its maps in ``workdir`` (created here), atomically.

    Outputs of an earlier run of the unit (catalogue, PSF, report…) are removed first, so
    the later lines never read a previous attempt's files. Raises :class:`QfinFailed`
    naming the image (and CCD) when the image is unusable; nothing is written then.
    """
    out = QfinOutputs(workdir=Path(workdir), image=image, image_path=Path(image_path))
    out.workdir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    path = out.image_path
    if not path.is_file():
        raise QfinFailed(f"image {image}: {path} does not exist or is not a file")
    gzipped = path.name.lower().endswith(".gz")
    with _Staged(out.workdir) as staged:
        weight = staged.open(out.weight)
        flag = staged.open(out.flag)
        plain = staged.open(out.sextractor_input) if out.unpacked else None
        source = path
        if gzipped and plain is not None:
            # The gzip stream's content is the plain MEF: unpacked first (bounded
            # memory, CRC checked), then read like any plain file.
            _gunzip(path, plain, image)
            source = staged.path(plain)
        _check_plain(source, path, image)
        with _open_fits(source, path, image) as mef:
            _stream(mef, source, path, image, weight=weight, flag=flag,
                    plain=None if gzipped else plain)  # fmt: skip
        staged.commit()
    return MapPaths(weight=out.weight, flag=out.flag, sextractor_input=out.sextractor_input)


def _remove_stale(out: QfinOutputs) -> None:
    for path in (
        out.report,
        out.catalog,
        out.sextractor_xml,
        out.psf,
        out.psfex_xml,
        out.psf_stars,
        out.weight,
        out.flag,
    ):
        path.unlink(missing_ok=True)
    if out.unpacked:
        out.sextractor_input.unlink(missing_ok=True)


@dataclass
class _Staged:
    """Output files written as temporaries beside their targets: all renamed into place by
    :meth:`commit`, all removed when anything fails first."""

    directory: Path
    files: list[tuple[BinaryIO, Path, Path]] = field(default_factory=list)

    def __enter__(self) -> _Staged:
        return self

    def open(self, target: Path) -> BinaryIO:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.directory)
        f = os.fdopen(fd, "w+b")
        self.files.append((f, Path(name), target))
        return f

    def path(self, f: BinaryIO) -> Path:
        return next(tmp for g, tmp, _ in self.files if g is f)

    def commit(self) -> None:
        for f, tmp, target in self.files:
            f.close()
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        self.files.clear()

    def __exit__(self, *exc: object) -> None:
        for f, tmp, _ in self.files:
            f.close()
            tmp.unlink(missing_ok=True)


def _gunzip(path: Path, into: BinaryIO, image: str) -> None:
    """Unpack ``path`` into ``into`` by chunks; a cut stream or a bad CRC -> QfinFailed
    (astropy and cfitsio would read a cut stream as a shorter file without a word)."""
    try:
        with gzip.open(path, "rb") as stream:
            shutil.copyfileobj(stream, into, GZIP_CHUNK)
    except (OSError, EOFError, zlib.error) as exc:
        raise QfinFailed(
            f"image {image}: {path} is a truncated or corrupt gzip file ({one_line(exc)})"
        ) from exc
    into.flush()


def _check_plain(source: Path, path: Path, image: str) -> None:
    """A FITS file (SIMPLE first) of whole blocks (a tile-compressed one too)."""
    with source.open("rb") as f:
        start = f.read(len(FITS_START))
    if start != FITS_START:
        raise QfinFailed(f"image {image}: {path} is not a FITS file (no SIMPLE card)")
    size = source.stat().st_size
    if size % FITS_BLOCK:
        raise QfinFailed(
            f"image {image}: {path} is truncated ({size} bytes, not whole {FITS_BLOCK}-byte "
            "FITS blocks)"
        )


@contextlib.contextmanager
def _open_fits(source: Path, path: Path, image: str) -> Iterator[Any]:
    """``source`` opened by cfitsio, its HDUs listed; unreadable or cut short -> QfinFailed."""
    import fitsio

    try:
        mef = fitsio.FITS(str(source))
    except Exception as exc:
        raise QfinFailed(
            f"image {image}: {path} is not a readable FITS file ({one_line(exc)})"
        ) from exc
    try:
        size = source.stat().st_size
        ends = [mef[n].get_offsets()["data_end"] for n in range(len(mef))]
        announced = mef[0].read_header().get("NEXTEND")
        why = None
        if ends and max(ends) > size:
            why = f"{size} bytes, its last extension ends at byte {max(ends)}"
        elif isinstance(announced, int) and announced > len(mef) - 1:
            why = f"NEXTEND announces {announced} extensions, it holds {len(mef) - 1}"
        if why:
            raise QfinFailed(f"image {image}: {path} is truncated ({why})")
        yield mef
    finally:
        mef.close()


def _stream(
    mef: Any, source: Path, path: Path, image: str, *, weight: BinaryIO, flag: BinaryIO,
    plain: BinaryIO | None,
) -> None:  # fmt: skip
    """Each CCD in turn: header checked, pixels read and checked, its flags appended to
    both maps and (a compressed image) its header and pixels to the plain copy."""
    primary = mef[0].read_header()
    maps = (
        _MapWriter(weight, "weight: 1 good, 0 saturated/zero/non-finite", inverted=True),
        _MapWriter(flag, "flags: 1 saturated, 2 zero, 4 non-finite"),
    )
    ccds = 0
    with source.open("rb") as raw_file:
        if plain is not None:
            plain.write(_primary_header(_raw_header(mef[0], raw_file)))
        for extension in range(1, len(mef)):
            hdu = mef[extension]
            if hdu.get_exttype() != "IMAGE_HDU" or not hdu.has_data():
                continue
            header = hdu.read_header()
            label = _label(header, extension)
            where = f"image {image}: CCD {label} of {path}"
            dims = tuple(hdu.get_dims())
            if len(dims) != 2:
                raise QfinFailed(f"{where} is not a 2-D image (shape {dims})")
            _check_wcs(header, where)
            try:
                hdu.ignore_scaling = True  # the stored integers, not floats
                stored = hdu.read()
            except Exception as exc:
                raise QfinFailed(f"{where} is truncated or corrupt ({one_line(exc)})") from exc
            flags = _flag_map(stored, header, primary)
            if not np.any(flags != FLAG_ZERO):
                raise QfinFailed(f"{where} is all zeros")
            cards = _raw_header(hdu, raw_file)
            extname = [c for c in _cards(cards) if c[:8].rstrip() == b"EXTNAME"]
            for writer in maps:
                writer.extension(flags, extname)
            del flags
            if plain is not None:
                _append_plain(plain, cards, stored, header, hdu.is_compressed())
            del stored
            ccds += 1
    if not ccds:
        raise QfinFailed(f"image {image}: {path} holds no CCD (no 2-D image extension)")
    for writer in maps:
        writer.close()


def _raw_header(hdu: Any, f: BinaryIO) -> bytes:
    """The HDU's header as stored: its cards, END and padding."""
    offsets = hdu.get_offsets()
    f.seek(offsets["header_start"])
    return f.read(offsets["data_start"] - offsets["header_start"])


def _cards(header: bytes) -> list[bytes]:
    """The 80-byte cards of a stored header, up to END (excluded)."""
    cards = []
    for start in range(0, len(header), CARD):
        card = header[start : start + CARD]
        if card[:8].rstrip() == b"END":
            break
        cards.append(card)
    return cards


def _primary_header(stored: bytes) -> bytes:
    """The primary header for the plain copy, data-less as the copy's primary is."""
    cards = [c for c in _cards(stored) if not c[:8].rstrip().startswith(b"NAXIS")]
    return _header([*cards[:2], fits_card("NAXIS", 0), *cards[2:]])


def fits_card(key: str, value: bool | int | float | str, comment: str = "") -> bytes:
    """One fixed-format card (FITS 4.0 §4.2)."""
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int | float):
        text = f"{value!r:>20}"
    else:
        text = "'" + f"{value.replace(chr(39), chr(39) * 2):<8}" + "'"
    card = f"{key:<8}= {text}" + (f" / {comment}" if comment else "")
    return card[:CARD].ljust(CARD).encode("ascii")


def _header(cards: list[bytes]) -> bytes:
    block = b"".join(cards) + b"END".ljust(CARD)
    return block + b" " * (-len(block) % FITS_BLOCK)


def _append_plain(
    f: BinaryIO, stored_header: bytes, stored: np.ndarray, header: Any, compressed: bool
) -> None:
    """The CCD as a plain image extension: its cards (a compressed HDU's without the
    table's and the compression's), then its stored values as big-endian bytes."""
    bitpix = int(header.get("ZBITPIX") if compressed else header.get("BITPIX"))
    ny, nx = stored.shape
    cards = [fits_card("XTENSION", "IMAGE"), fits_card("BITPIX", bitpix), fits_card("NAXIS", 2),
             fits_card("NAXIS1", nx), fits_card("NAXIS2", ny), fits_card("PCOUNT", 0),
             fits_card("GCOUNT", 1)]  # fmt: skip
    for card in _cards(stored_header):
        key = card[:8].rstrip().decode("ascii", "replace")
        if key in _COMPRESSION_KEYS or (compressed and key.startswith(_COMPRESSION_PREFIXES)):
            continue
        if not compressed and key.startswith("NAXIS"):
            continue
        cards.append(card)
    f.write(_header(cards))
    pixels = np.ascontiguousarray(stored, dtype=BITPIX_DTYPES[bitpix])
    f.write(pixels.data)
    f.write(bytes(-pixels.nbytes % FITS_BLOCK))


@dataclass
class _MapWriter:
    """An 8-bit MEF written one extension at a time, sparsely: only the chunks holding a
    non-zero byte are written, the rest are holes that read as zeros. A map is almost all
    zeros, so a 36-CCD MegaCam exposure's maps cost a few blocks on the node's partition
    instead of 680 MB, and no write time. ``inverted`` writes a 0/1 weight from the flags:
    it stores ``flag != 0`` with BSCALE -1 and BZERO 1, which every FITS reader,
    source-extractor included, reads as ``1 - stored``: 1 where no flag is set, 0 elsewhere.
    """

    f: BinaryIO
    what: str
    inverted: bool = False
    offset: int = 0

    def __post_init__(self) -> None:
        comment = f"COMMENT SPICA QFin {self.what}".ljust(CARD).encode("ascii")
        cards = [fits_card("SIMPLE", True), fits_card("BITPIX", 8), fits_card("NAXIS", 0),
                 fits_card("EXTEND", True), comment]  # fmt: skip
        self._write(_header(cards))

    def _write(self, data: bytes) -> None:
        self.f.seek(self.offset)
        self.f.write(data)
        self.offset += len(data)

    def extension(self, plane: np.ndarray, extname: list[bytes]) -> None:
        ny, nx = plane.shape
        cards = [fits_card("XTENSION", "IMAGE"), fits_card("BITPIX", 8), fits_card("NAXIS", 2),
                 fits_card("NAXIS1", nx), fits_card("NAXIS2", ny), fits_card("PCOUNT", 0),
                 fits_card("GCOUNT", 1)]  # fmt: skip
        if self.inverted:
            cards += [fits_card("BSCALE", -1.0, "value = 1 - stored byte"), fits_card("BZERO", 1.0)]
        self._write(_header(cards + extname))
        flat = plane.reshape(-1)
        for start in _nonzero_chunks(flat):
            part = flat[start : start + SPARSE_CHUNK]
            self.f.seek(self.offset + start)
            self.f.write((part != 0).tobytes() if self.inverted else part.tobytes())
        self.offset += flat.size + (-flat.size % FITS_BLOCK)

    def close(self) -> None:
        self.f.truncate(self.offset)


def _nonzero_chunks(plane: np.ndarray) -> list[int]:
    """Offsets of the SPARSE_CHUNKs of a flat plane that hold a non-zero byte."""
    whole = len(plane) // SPARSE_CHUNK * SPARSE_CHUNK
    blocks = plane[:whole].reshape(-1, SPARSE_CHUNK).any(axis=1)
    offsets = [int(i) * SPARSE_CHUNK for i in np.flatnonzero(blocks)]
    if whole < len(plane) and plane[whole:].any():
        offsets.append(whole)
    return offsets


def _label(header: Any, extension: int) -> str:
    name = str(header.get("EXTNAME", "") or "").strip()
    return f"{name} (extension {extension})" if name else f"extension {extension}"


def _check_wcs(header: Any, where: str) -> None:
    """A celestial WCS the tools can use: a longitude/latitude axis pair of one known
    projection, finite reference values and a non-singular pixel-to-sky matrix of a
    plausible scale. Read from the header's keywords (FITS WCS papers I and II) rather
    than through astropy.wcs, whose import alone costs more than the check of a whole
    exposure, paid by every QFin unit."""

    def fail(why: str) -> NoReturn:
        raise QfinFailed(f"{where} has no usable celestial WCS ({why})")

    ctypes = [str(header.get(f"CTYPE{i}", "")).upper() for i in (1, 2)]
    axes = (ctypes[0][:4], ctypes[1][:4])
    if not any(axes in (pair, pair[::-1]) for pair in CELESTIAL_AXES):
        fail(f"CTYPE1 {ctypes[0]!r}, CTYPE2 {ctypes[1]!r}: not a longitude/latitude pair")
    codes = {c[5:] for c in ctypes}
    if any(len(c) != 8 or c[4] != "-" for c in ctypes) or len(codes) != 1:
        fail(f"CTYPE1 {ctypes[0]!r}, CTYPE2 {ctypes[1]!r}: not one projection of both axes")
    if not codes <= PROJECTIONS:
        fail(f"unknown projection {codes.pop()!r}")
    for key in ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2"):
        if _number(header.get(key)) is None:
            fail(f"{key} missing or not a finite number")
    matrix = _linear_matrix(header)
    if matrix is None:
        fail("no CDi_j, PCi_j/CDELTi or CDELTi keywords")
    det = float(np.linalg.det(np.array(matrix)))
    if not math.isfinite(det) or det == 0.0:
        fail("singular pixel-to-sky matrix")
    scale = math.sqrt(abs(det)) * 3600.0
    if not MIN_SCALE <= scale <= MAX_SCALE:
        fail(f'pixel scale {scale:.3g}"/pixel, outside {MIN_SCALE}-{MAX_SCALE}')


def _linear_matrix(header: Any) -> list[list[float]] | None:
    """The 2x2 pixel-to-sky matrix (deg/pixel): CD, else PC scaled by CDELT, else CDELT."""
    cd = [[_number(header.get(f"CD{i}_{j}")) for j in (1, 2)] for i in (1, 2)]
    if any(v is not None for row in cd for v in row):
        return [[v or 0.0 for v in row] for row in cd]
    cdelt1, cdelt2 = (_number(header.get(f"CDELT{i}")) for i in (1, 2))
    if cdelt1 is None or cdelt2 is None:
        return None
    rows = []
    for i, cdelt in ((1, cdelt1), (2, cdelt2)):
        row = []
        for j in (1, 2):
            pc = _number(header.get(f"PC{i}_{j}"))
            row.append(cdelt * (pc if pc is not None else float(i == j)))
        rows.append(row)
    return rows


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _saturation(header: Any, primary: Any) -> float | None:
    for source in (header, primary):
        value = source.get("SATURATE")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _scaling(header: Any) -> tuple[float, float]:
    scale, zero = (_number(header.get(key)) for key in ("BSCALE", "BZERO"))
    return (1.0 if scale is None else scale), (0.0 if zero is None else zero)


def _flag_map(stored: np.ndarray, header: Any, primary: Any) -> np.ndarray:
    """The CCD's flags from its stored values: whole-array passes, no fancy indexing (a
    CCD is 9.4 Mpixels). Integers with BSCALE 1 and an integer BZERO (MegaCam's 16-bit
    unsigned pixels) are compared in the stored scale, exactly; others through floats."""
    saturate = _saturation(header, primary)
    scale, zero = _scaling(header)
    if stored.dtype.kind in "iu" and scale == 1.0 and zero.is_integer():
        info = np.iinfo(stored.dtype)
        limit = info.max + 1 if saturate is None else math.ceil(saturate - zero)
        if limit > info.max:  # no stored value reaches it
            flag = np.zeros(stored.shape, dtype=np.uint8)
        else:  # physical >= saturate, in stored values, straight into the flags (0/1)
            flag = np.empty(stored.shape, dtype=np.uint8)
            np.greater_equal(stored, max(limit, int(info.min)), out=flag.view(bool))
        if info.min <= -zero <= info.max:
            zeros = np.equal(stored, int(-zero))
            if zeros.any():  # rare: no pass over the flags when there is none
                np.bitwise_or(flag, FLAG_ZERO, out=flag, where=zeros)
        return flag
    data = stored if (scale, zero) == (1.0, 0.0) else stored * scale + zero
    with np.errstate(invalid="ignore"):
        if saturate is not None:
            flag = (data >= saturate).view(np.uint8)  # NaN compares False
        else:
            flag = np.zeros(data.shape, dtype=np.uint8)
        flag |= (data == 0).view(np.uint8) * np.uint8(FLAG_ZERO)
    if data.dtype.kind == "f":
        nonfinite = ~np.isfinite(data)
        flag[nonfinite] = FLAG_NONFINITE  # +inf is not saturation but a broken pixel
    return flag


__all__ = ["FLAG_NONFINITE", "FLAG_SATURATED", "FLAG_ZERO", "MapPaths", "fits_card", "write_maps"]

"""The first line of a QFin unit: check the image, write its weight and flag maps.

source-extractor is told which pixels to ignore by two MEFs beside the outputs, one
extension per CCD: a weight map (1 good, 0 bad) and a flag map (bits below) for saturated,
zero or non-finite pixels, both 8-bit (a float weight map would be four times the bytes to
write for the same two values). The image is checked first — readable FITS, not truncated, no CCD
all zeros, a usable celestial WCS on every CCD — so a broken exposure fails here with a
message naming it and its CCD, before any tool runs and nothing of it is written. A
compressed MEF (``.fits.fz``, ``.fits.gz``) is unpacked beside the maps: source-extractor
reads plain FITS only.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np

from spica_core.node.files import one_line
from spica_core.qfin.measure import QfinFailed
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
#: A plain FITS file is whole 2880-byte blocks; anything else was cut short.
FITS_BLOCK = 2880
FITS_START = b"SIMPLE  ="
#: Granularity of the maps' sparse writing (bytes): a multiple of file systems' blocks.
SPARSE_CHUNK = 4096


@dataclass(frozen=True)
class MapPaths:
    """The maps written, and the MEF source-extractor reads (the image or its unpacked copy)."""

    weight: Path
    flag: Path
    sextractor_input: Path


@dataclass(frozen=True)
class _Ccd:
    """One image extension: its place in the MEF, its name, header and pixels."""

    extension: int
    label: str
    header: Any
    data: np.ndarray


def write_maps(image_path: Path, workdir: Path, *, image: str) -> MapPaths:
    """Check ``image_path`` and write its maps in ``workdir`` (created here), atomically.

    Outputs of an earlier run of the unit (catalogue, PSF, report…) are removed first, so
    the later lines never read a previous attempt's files. Raises :class:`QfinFailed`
    naming the image (and CCD) when the image is unusable; nothing is written then.
    """
    out = QfinOutputs(workdir=Path(workdir), image=image, image_path=Path(image_path))
    out.workdir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    with _open_image(out.image_path, image) as hdus:
        ccds = _ccds(hdus, image, out.image_path)
        primary_header = hdus[0].header
        flags = [_flag_map(ccd, primary_header) for ccd in ccds]
        # The weight map stores 1 - weight (BSCALE -1, BZERO 1): zeros wherever the
        # pixel is good, so both maps are mostly zero bytes, left as holes on disk.
        _write_map(out.weight, ccds, flags, "weight: 1 good, 0 saturated/zero/non-finite",
                   inverted=True)  # fmt: skip
        _write_map(out.flag, ccds, flags, "flags: 1 saturated, 2 zero, 4 non-finite")
        if out.unpacked:
            _write_unpacked(out.sextractor_input, hdus[0].header, ccds)
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


@contextlib.contextmanager
def _open_image(path: Path, image: str) -> Iterator[Any]:
    """The image's HDUs, every one read; not FITS, truncated or unreadable -> QfinFailed."""
    from astropy.io import fits

    if not path.is_file():
        raise QfinFailed(f"image {image}: {path} does not exist or is not a file")
    source: Path | io.BytesIO = path
    if path.name.lower().endswith(".gz"):
        # astropy reads a cut gzip stream as a shorter file without a word: decompress
        # here, where a truncated stream or a bad CRC raises.
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as exc:
            raise QfinFailed(
                f"image {image}: {path} is a truncated or corrupt gzip file ({one_line(exc)})"
            ) from exc
        size = len(raw)
        source = io.BytesIO(raw)
    else:
        size = path.stat().st_size
        with path.open("rb") as f:
            start = f.read(len(FITS_START))
        if start != FITS_START:
            raise QfinFailed(f"image {image}: {path} is not a FITS file (no SIMPLE card)")
    if size % FITS_BLOCK:
        raise QfinFailed(
            f"image {image}: {path} is truncated ({size} bytes, not whole {FITS_BLOCK}-byte "
            "FITS blocks)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdus = fits.open(source, memmap=False, lazy_load_hdus=False)
        except Exception as exc:
            raise QfinFailed(
                f"image {image}: {path} is not a readable FITS file ({one_line(exc)})"
            ) from exc
        try:
            for hdu in hdus:
                _ = hdu.data  # reads the pixels now: a short file fails here
        except Exception as exc:
            hdus.close()
            raise QfinFailed(
                f"image {image}: {path} is truncated or corrupt ({one_line(exc)})"
            ) from exc
    truncated = [str(w.message) for w in caught if "truncated" in str(w.message).lower()]
    announced = hdus[0].header.get("NEXTEND")
    if isinstance(announced, int) and announced > len(hdus) - 1:
        truncated.append(f"NEXTEND announces {announced} extensions, it holds {len(hdus) - 1}")
    if truncated:
        hdus.close()
        raise QfinFailed(f"image {image}: {path} is truncated ({' '.join(truncated[0].split())})")
    try:
        yield hdus
    finally:
        hdus.close()


def _ccds(hdus: Sequence[Any], image: str, path: Path) -> list[_Ccd]:
    """The image's CCDs (2-D image HDUs), each checked: not all zeros, a usable WCS."""
    ccds: list[_Ccd] = []
    for extension, hdu in enumerate(hdus):
        data = hdu.data
        if data is None or not getattr(hdu, "is_image", False):
            continue
        label = _label(hdu, extension)
        if data.ndim != 2:
            raise QfinFailed(
                f"image {image}: CCD {label} of {path} is not a 2-D image "
                f"(shape {tuple(data.shape)})"
            )
        if not np.any(data):
            raise QfinFailed(f"image {image}: CCD {label} of {path} is all zeros")
        _check_wcs(hdu.header, f"image {image}: CCD {label} of {path}")
        ccds.append(_Ccd(extension=extension, label=label, header=hdu.header, data=data))
    if not ccds:
        raise QfinFailed(f"image {image}: {path} holds no CCD (no 2-D image extension)")
    return ccds


def _label(hdu: Any, extension: int) -> str:
    name = str(hdu.header.get("EXTNAME", "") or "").strip()
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


def _flag_map(ccd: _Ccd, primary: Any) -> np.ndarray:
    """The CCD's flags: whole-array passes, no fancy indexing (a CCD is 9.4 Mpixels)."""
    data = ccd.data
    saturate = _saturation(ccd.header, primary)
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


def _write_map(
    path: Path,
    ccds: Sequence[_Ccd],
    planes: Sequence[np.ndarray],
    what: str,
    *,
    inverted: bool = False,
) -> None:
    """An 8-bit MEF whose extensions match the image's CCDs, one per CCD in the same order.

    Written sparsely: only the chunks holding a non-zero byte are written, the rest are
    holes that read as zeros. A map is almost all zeros, so a 36-CCD MegaCam exposure's
    maps cost a few blocks on the node's partition instead of 680 MB, and no write time.
    ``inverted`` writes a 0/1 weight from the flags: it stores ``flag != 0`` with BSCALE -1
    and BZERO 1, which every FITS reader, source-extractor included, reads as
    ``1 - stored``: 1 where no flag is set, 0 elsewhere.
    """
    from astropy.io import fits

    primary = fits.Header([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True)])
    primary["COMMENT"] = f"SPICA QFin {what}"
    chunks: list[bytes | np.ndarray] = [primary.tostring(padding=True).encode("ascii")]
    for ccd, plane in zip(ccds, planes, strict=True):
        ny, nx = plane.shape
        header = fits.Header(
            [("XTENSION", "IMAGE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", nx),
             ("NAXIS2", ny), ("PCOUNT", 0), ("GCOUNT", 1)]
        )  # fmt: skip
        if inverted:
            header["BSCALE"] = (-1.0, "value = 1 - stored byte")
            header["BZERO"] = 1.0
        if "EXTNAME" in ccd.header:
            header["EXTNAME"] = ccd.header["EXTNAME"]
        chunks.append(header.tostring(padding=True).encode("ascii"))
        chunks.append(np.ascontiguousarray(plane, dtype=np.uint8).reshape(-1))
        chunks.append(bytes(-plane.size % FITS_BLOCK))
    _atomic(path, lambda f: _write_sparse(f, chunks, inverted=inverted))


def _write_sparse(f: BinaryIO, chunks: Sequence[bytes | np.ndarray], *, inverted: bool) -> None:
    """Headers written whole, pixel planes only where a SPARSE_CHUNK holds a non-zero."""
    offset = 0
    for chunk in chunks:
        if isinstance(chunk, bytes):
            f.seek(offset)
            f.write(chunk)
        else:
            for start in _nonzero_chunks(chunk):
                part = chunk[start : start + SPARSE_CHUNK]
                f.seek(offset + start)
                f.write((part != 0).tobytes() if inverted else part.tobytes())
        offset += len(chunk)
    f.truncate(offset)


def _nonzero_chunks(plane: np.ndarray) -> list[int]:
    """Offsets of the SPARSE_CHUNKs of a flat plane that hold a non-zero byte."""
    whole = len(plane) // SPARSE_CHUNK * SPARSE_CHUNK
    blocks = plane[:whole].reshape(-1, SPARSE_CHUNK).any(axis=1)
    offsets = [int(i) * SPARSE_CHUNK for i in np.flatnonzero(blocks)]
    if whole < len(plane) and plane[whole:].any():
        offsets.append(whole)
    return offsets


def _write_unpacked(path: Path, primary_header: Any, ccds: Sequence[_Ccd]) -> None:
    """The image as a plain MEF (headers and pixels unchanged) for source-extractor."""
    from astropy.io import fits

    primary = fits.PrimaryHDU(header=primary_header.copy())
    hdus: list[Any] = [primary]
    for ccd in ccds:
        header = ccd.header.copy()
        for key in ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT"):
            header.remove(key, ignore_missing=True)
        hdus.append(fits.ImageHDU(ccd.data, header))
    _atomic(path, lambda f: fits.HDUList(hdus).writeto(f))


def _atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through a temporary file beside ``path``, renamed into place when whole."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w+b") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["FLAG_NONFINITE", "FLAG_SATURATED", "FLAG_ZERO", "MapPaths", "write_maps"]

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
from typing import Any, BinaryIO

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
    """A celestial WCS that maps the CCD's centre to a finite sky position."""
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # fix=False: astropy's cdfix would turn a singular CD matrix into a unit one.
            wcs = WCS(header, fix=False).celestial
            if not wcs.has_celestial or wcs.naxis != 2:
                raise ValueError("no RA/Dec axes (CTYPE1/CTYPE2)")
            ny, nx = int(header.get("NAXIS2", 1)), int(header.get("NAXIS1", 1))
            centre = np.array([[nx / 2.0, ny / 2.0], [nx / 2.0 + 1.0, ny / 2.0 + 1.0]])
            sky = wcs.all_pix2world(centre, 0)
            scale = math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0
        except Exception as exc:
            raise QfinFailed(f"{where} has no usable celestial WCS ({one_line(exc)})") from exc
    if not np.all(np.isfinite(sky)) or not (MIN_SCALE <= scale <= MAX_SCALE):
        raise QfinFailed(
            f'{where} has no usable celestial WCS (pixel scale {scale:.3g}"/pixel, '
            f"outside {MIN_SCALE}-{MAX_SCALE})"
        )


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

"""The first line of a QFin unit: check the image, write its weight and flag maps.

source-extractor is told which pixels to ignore by two MEFs beside the outputs, one
extension per CCD: a weight map (1 good, 0 bad) and a flag map (bits below) for saturated,
zero or non-finite pixels. The image is checked first — readable FITS, not truncated, no CCD
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
from typing import Any

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
        weights = [(flag == 0).astype(np.float32) for flag in flags]
        _write_mef(out.weight, ccds, weights, "weight: 1 good, 0 saturated/zero/non-finite")
        _write_mef(out.flag, ccds, flags, "flags: 1 saturated, 2 zero, 4 non-finite")
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
    data = ccd.data
    flag = np.zeros(data.shape, dtype=np.uint8)
    saturate = _saturation(ccd.header, primary)
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        flag[~finite] |= FLAG_NONFINITE
        if saturate is not None:
            flag[finite & (data >= saturate)] |= FLAG_SATURATED
    elif saturate is not None:
        flag[data >= saturate] |= FLAG_SATURATED
    flag[data == 0] |= FLAG_ZERO
    return flag


def _write_mef(path: Path, ccds: Sequence[_Ccd], planes: Sequence[np.ndarray], what: str) -> None:
    """A MEF whose extensions match the image's CCDs, one per CCD in the same order."""
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header["COMMENT"] = f"SPICA QFin {what}"
    hdus: list[Any] = [primary]
    for ccd, plane in zip(ccds, planes, strict=True):
        header = fits.Header()
        if "EXTNAME" in ccd.header:
            header["EXTNAME"] = ccd.header["EXTNAME"]
        hdus.append(fits.ImageHDU(plane, header))
    _atomic_fits(path, lambda tmp: fits.HDUList(hdus).writeto(tmp))


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
    _atomic_fits(path, lambda tmp: fits.HDUList(hdus).writeto(tmp))


def _atomic_fits(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file beside ``path``, renamed into place when whole."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.unlink()
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["FLAG_NONFINITE", "FLAG_SATURATED", "FLAG_ZERO", "MapPaths", "write_maps"]

"""Writing a synthetic exposure as a multi-extension FITS file.

Three containers, as CFHT and CADC deliver them: ``.fits`` (plain MEF), ``.fits.gz`` (the
whole file gzipped) and ``.fits.fz`` (each CCD a tile-compressed ``CompImageHDU``, the
primary header plain). Output is byte-for-byte reproducible: the gzip header carries no
time stamp and the pixels come from a seeded source.

Pixels are a :data:`PixelSource`: noise now, stars drawn from a fixed sky catalogue later,
without this module changing.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits

from spica_core.synth.layout import ExposureSpec, ccd_cards, primary_cards

Container = Literal["fits", "fits.gz", "fits.fz"]
CONTAINERS: tuple[Container, ...] = ("fits", "fits.gz", "fits.fz")

#: Pixels of CCD ``index`` of ``spec`` (uint16 ADU of ``spec.ccd_shape``).
PixelSource = Callable[[ExposureSpec, int], "np.ndarray"]

#: Sky level and its noise (ADU) of the default pixels.
SKY, SKY_NOISE = 1000.0, 30.0


def noise_pixels(spec: ExposureSpec, index: int) -> np.ndarray:
    """Flat sky with Gaussian noise, seeded by the exposure and the CCD."""
    seed = zlib.crc32(f"{spec.filename}/{index}".encode())
    rng = np.random.default_rng(seed)
    values = rng.normal(SKY, SKY_NOISE, size=spec.ccd_shape)
    return np.clip(np.rint(values), 0, spec.saturate).astype(np.uint16)


def exposure_hdus(
    spec: ExposureSpec, container: Container, pixels: PixelSource = noise_pixels
) -> fits.HDUList:
    """The exposure as HDUs: a data-less primary and one image extension per CCD."""
    primary = fits.PrimaryHDU()
    primary.header.extend(primary_cards(spec))
    hdus: list[fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU] = [primary]
    for index in range(spec.ccds):
        header = fits.Header(ccd_cards(spec, index))
        data = pixels(spec, index)
        if index in spec.dead_ccds:
            data = np.zeros_like(data)
        if container == "fits.fz":
            # One tile per CCD: the same Rice coding, a third less of astropy's time per HDU.
            hdus.append(
                fits.CompImageHDU(
                    data, header, compression_type="RICE_1", tile_shape=tuple(data.shape)
                )
            )
        else:
            hdus.append(fits.ImageHDU(data, header))
    return fits.HDUList(hdus)


def exposure_bytes(
    spec: ExposureSpec, container: Container, pixels: PixelSource = noise_pixels
) -> bytes:
    """The file's bytes; the same spec and pixels always give the same bytes."""
    data = hdus_bytes(exposure_hdus(spec, container, pixels))
    if container == "fits.gz":
        return gzip.compress(data, compresslevel=6, mtime=0)
    return data


def write_exposure(
    spec: ExposureSpec,
    directory: str | os.PathLike[str],
    container: Container = "fits.gz",
    pixels: PixelSource = noise_pixels,
) -> Path:
    """Write ``<directory>/<filename>.<container>`` (atomically) and return its path."""
    path = Path(directory) / f"{spec.filename}.{container}"
    return replace_file(path, exposure_bytes(spec, container, pixels))


def replace_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Make ``path`` hold ``data`` (its directory created); never seen half-written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def hdus_bytes(hdus: fits.HDUList) -> bytes:
    """A plain FITS file's bytes (verified)."""
    buffer = io.BytesIO()
    hdus.writeto(buffer, output_verify="exception")
    return buffer.getvalue()

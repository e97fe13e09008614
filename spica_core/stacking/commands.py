"""The lines of a stack unit's ``commands.sh``: argv lists, joined by the caller.

Per input ``spica stack prepare`` (checksum, plain MEF, weight map, ``.ahead``, the tools'
lists) and ``source-extractor`` (FITS_LDAC) → ``scamp`` offline against the release's
reference catalogue (writes each input's ``.head``) → ``SWarp`` (co-add and weight on the
tile) → ``source-extractor`` and ``psfex`` on the co-add (catalogue, seeing) → ``spica stack
inject`` and ``source-extractor`` on the injected copy (completeness) → ``stiff`` (thumbnail)
→ ``spica stack record`` (reads the outputs into dbspica). An image-mode unit (one exposure)
runs the same lines. Only real binaries and ``spica`` subcommands, no inline code; every
file is named by :class:`~spica_core.stacking.outputs.StackOutputs`, so a requeued unit
resumes at its failed line with the files the earlier lines left.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from pathlib import Path

from spica_core.errors import UsageError
from spica_core.names import validate_name
from spica_core.qfin.commands import tool_path
from spica_core.stacking.outputs import INPUT_CATALOG, INPUT_IMAGE, INPUT_WEIGHT, StackOutputs
from spica_core.stacking.unit import StackInput, StackUnit

#: The AstrOmatic configuration files of a stack, in the unit's ``config_dir`` (the detection
#: filter and the star/galaxy network are QFin's).
SEX_CONFIG = "stack.sex"
SEX_PARAMS = "stack.param"
SEX_FILTER = "qfin.conv"
SEX_NNW = "qfin.nnw"
SCAMP_CONFIG = "stack.scamp"
SWARP_CONFIG = "stack.swarp"
PSFEX_CONFIG = "stack.psfex"
STIFF_CONFIG = "stack.stiff"
CONFIG_FILES = (SEX_CONFIG, SEX_PARAMS, SEX_FILTER, SEX_NNW, SCAMP_CONFIG, SWARP_CONFIG,
                PSFEX_CONFIG, STIFF_CONFIG)  # fmt: skip
#: Largest side of the thumbnail (pixels): STIFF bins the co-add down to it.
THUMBNAIL_PIXELS = 1024


def _tool_path(kind: str, path: str, stack: str) -> str:
    return tool_path(f"stack {stack}: {kind}", path)


@functools.lru_cache(maxsize=256)
def _fits_keyword(key: str) -> bool:
    """Whether ``key`` is a FITS keyword (a release names a handful, each unit all of them)."""
    return 0 < len(key) <= 8 and all(c.isupper() or c.isdigit() or c in "-_" for c in key)


def _ahead_value(stack: str, image: str, key: str, value: object) -> str:
    """``KEY=VALUE`` of one ``.ahead`` card, the key a FITS keyword."""
    if not _fits_keyword(key):
        raise UsageError(f"stack {stack}: image {image}: .ahead key {key!r} is not a FITS keyword")
    if isinstance(value, bool):
        text = "T" if value else "F"
    elif isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"stack {stack}: image {image}: .ahead {key} is {value}")
    else:
        text = str(value)
    if any(c in text for c in "\n\r\0"):
        raise UsageError(f"stack {stack}: image {image}: .ahead {key} holds a line break")
    return f"{key}={text}"


def _prepare(unit: StackUnit, item: StackInput, workdir: str) -> list[str]:
    stack = unit.name
    image = validate_name(item.image, "image")
    line = ["spica", "stack", "prepare", stack, "--workdir", workdir, "--image", image,
            "--path", _tool_path(f"image {image}: path", item.path, stack)]  # fmt: skip
    if item.checksum:
        line += ["--checksum", item.checksum]
    for key, value in item.ahead.items():
        line += ["--ahead", _ahead_value(stack, image, key, value)]
    if item.weight:
        line += ["--weight", _tool_path(f"image {image}: weight map", item.weight, stack)]
    if item.flag:
        line += ["--flag", _tool_path(f"image {image}: flag map", item.flag, stack)]
    if item.scamp:
        line.append("--scamp")
    if item.swarp:
        line.append("--swarp")
    return line


@functools.lru_cache(maxsize=64)
def _config_files(config_dir: str) -> Mapping[str, str]:
    """Each configuration file's path as text: the same for every unit of a release."""
    return {name: str(Path(config_dir) / name) for name in CONFIG_FILES}


def _sextractor(
    config: Mapping[str, str], image: str, weight: str, catalog: str, *, xml: str | None = None
) -> list[str]:
    line = [
        "source-extractor", image,
        "-c", config[SEX_CONFIG],
        "-PARAMETERS_NAME", config[SEX_PARAMS],
        "-FILTER_NAME", config[SEX_FILTER],
        "-STARNNW_NAME", config[SEX_NNW],
        "-CATALOG_NAME", catalog,
        "-CATALOG_TYPE", "FITS_LDAC",
        "-WEIGHT_TYPE", "MAP_WEIGHT",
        "-WEIGHT_IMAGE", weight,
    ]  # fmt: skip
    if xml is not None:
        line += ["-WRITE_XML", "Y", "-XML_NAME", xml]
    return line


def stack_commands(unit: StackUnit) -> list[list[str]]:
    """The unit's argv lists in order (see the module's docstring).

    Raises :class:`~spica_core.errors.InvalidName` for a bad stack, release or image name
    and :class:`~spica_core.errors.UsageError` for a path the tools cannot take, a unit
    without inputs or an input co-added without its astrometry.
    """
    stack = validate_name(unit.name, "stack")
    release = validate_name(unit.release, "release")
    workdir = _tool_path("work directory", unit.workdir, stack)
    config = _config_files(_tool_path("configuration directory", unit.config_dir, stack))
    refcat = _tool_path("reference catalogue", unit.reference_catalogue, stack)
    if not unit.swarp_inputs:
        raise UsageError(f"stack {stack}: no input to co-add")
    images = [i.image for i in unit.inputs]
    twice = sorted({i for i in images if images.count(i) > 1})
    if twice:
        raise UsageError(f"stack {stack}: image(s) {', '.join(twice)} listed twice")
    lost = [i.image for i in unit.swarp_inputs if not i.scamp]
    if lost:
        # SWarp reads each input's astrometry from the .head SCAMP writes.
        raise UsageError(
            f"stack {stack}: image(s) {', '.join(lost)} co-added but not in SCAMP's inputs"
        )
    tile = unit.tile
    nx, ny = tile.size
    if nx <= 0 or ny <= 0 or not tile.pixel_scale > 0:
        raise UsageError(f'stack {stack}: tile size {nx}x{ny} at {tile.pixel_scale}"/px')
    out = StackOutputs(workdir=Path(workdir), stack=stack)
    lines = [_prepare(unit, item, workdir) for item in unit.inputs]
    lines += [
        _sextractor(config, out.input_text(i.image, INPUT_IMAGE),
                    out.input_text(i.image, INPUT_WEIGHT), out.input_text(i.image, INPUT_CATALOG))
        for i in unit.scamp_inputs
    ]  # fmt: skip
    scamp = [
        "scamp", f"@{out.scamp_list}",
        "-c", config[SCAMP_CONFIG],
        "-ASTREF_CATALOG", "FILE",
        "-ASTREFCAT_NAME", refcat,
        "-WRITE_XML", "Y",
        "-XML_NAME", str(out.scamp_xml),
    ]  # fmt: skip
    swarp = [
        "SWarp", f"@{out.swarp_list}",
        "-c", config[SWARP_CONFIG],
        "-IMAGEOUT_NAME", str(out.coadd),
        "-WEIGHTOUT_NAME", str(out.coadd_weight),
        "-RESAMPLE_DIR", str(out.resample_dir),
        "-CENTER_TYPE", "MANUAL",
        "-CENTER", f"{tile.ra:.7f},{tile.dec:+.7f}",
        "-PIXELSCALE_TYPE", "MANUAL",
        "-PIXEL_SCALE", f"{tile.pixel_scale:.6f}",
        "-IMAGE_SIZE", f"{nx},{ny}",
        "-WRITE_XML", "Y",
        "-XML_NAME", str(out.swarp_xml),
    ]  # fmt: skip
    coadd_catalog = _sextractor(
        config, str(out.coadd), str(out.coadd_weight), str(out.catalog),
        xml=str(out.sextractor_xml),
    )  # fmt: skip
    psfex = [
        "psfex", str(out.catalog),
        "-c", config[PSFEX_CONFIG],
        "-PSF_DIR", workdir,
        "-WRITE_XML", "Y",
        "-XML_NAME", str(out.psfex_xml),
    ]  # fmt: skip
    inject = ["spica", "stack", "inject", stack, "--workdir", workdir, "--refcat", refcat]
    inject_catalog = _sextractor(
        config, str(out.inject_image), str(out.coadd_weight), str(out.inject_catalog)
    )
    stiff = [
        "stiff", str(out.coadd),
        "-c", config[STIFF_CONFIG],
        "-OUTFILE_NAME", str(out.thumbnail),
        "-BINNING", str(max(1, math.ceil(max(nx, ny) / THUMBNAIL_PIXELS))),
    ]  # fmt: skip
    record = ["spica", "stack", "record", stack, "--workdir", workdir, "--release", release]
    lines += [scamp, swarp, coadd_catalog, psfex, inject, inject_catalog, stiff, record]
    return lines

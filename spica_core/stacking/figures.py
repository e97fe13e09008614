"""What a completed stack unit's outputs say: the figures ``spica stack record`` keeps.

Read from the files :class:`~spica_core.stacking.outputs.StackOutputs` names, with the
tools' XML read leniently (:func:`spica_core.qfin.measure.votable_rows`) and FITS through
cfitsio (``fitsio``): the record is the unit's last line, no astropy import.

* SCAMP's astrometric RMS: ``scamp.xml``, table ``FGroups``, ``AstromSigma_Internal`` and
  ``AstromSigma_Reference`` (arcsec, one value per axis): the figure is the 2-D RMS,
  ``hypot(axis1, axis2)``, of the worst field group.
* Seeing: PSFEx's ``FWHM_WCS_Mean`` (arcsec) on the co-add.
* Background and its RMS, sources: source-extractor's XML of the co-add
  (``Extension_Data``: ``Background_Mean``, ``Background_StDev``, ``NSextracted``).
* Total exposure: the sum of the SWarp inputs' ``EXPTIME`` (their primary headers), checked
  against SWarp's (``swarp.xml``, ``ExpTime`` of each frame) where SWarp found one.
* Completeness and zero point: :mod:`spica_core.stacking.completeness` on the injected copy.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from spica_core.qfin.measure import QfinFailed, psfex_extensions, votable_rows
from spica_core.stacking.outputs import StackOutputs
from spica_core.stacking.prepare import StackFailed


@dataclass(frozen=True)
class StackFigures:
    """The figures of one co-add (``stack_result``'s columns, paths as on the node)."""

    stack: str
    coadd_path: str
    weight_path: str
    catalog_path: str
    thumbnail_path: str | None
    scamp_inputs: int
    swarp_inputs: int
    exptime: float | None
    seeing: float | None
    scamp_internal_rms: float | None
    scamp_external_rms: float | None
    background: float | None
    background_rms: float | None
    sources: int
    completeness: float | None
    zero_point: float | None


def stack_figures(out: StackOutputs) -> StackFigures:
    """Read every output of the unit; StackFailed naming the file when one is missing or
    unusable (the co-add, its catalogue, SCAMP's XML); figures a tool could not give are
    None."""
    owner = f"stack {out.stack}"
    for path, what in ((out.coadd, "SWarp's co-add"), (out.coadd_weight, "SWarp's weight"),
                       (out.catalog, "source-extractor's catalogue of the co-add")):  # fmt: skip
        if not path.is_file():
            raise StackFailed(f"{owner}: {what} {path} is missing")
    scamp_list, swarp_list = _listed(out.scamp_list), _listed(out.swarp_list)
    if not swarp_list:
        raise StackFailed(f"{owner}: {out.swarp_list} lists no input")
    try:
        internal, external = _scamp_rms(out.scamp_xml, owner)
        background, background_rms, sources = _background(out.sextractor_xml, owner)
        seeing = _seeing(out.psfex_xml, owner)
        exptime = _exptime(swarp_list, out.swarp_xml, owner)
    except QfinFailed as exc:
        raise StackFailed(str(exc)) from exc
    completeness, zero_point = _completeness(out)
    return StackFigures(
        stack=out.stack,
        coadd_path=str(out.coadd),
        weight_path=str(out.coadd_weight),
        catalog_path=str(out.catalog),
        thumbnail_path=str(out.thumbnail) if out.thumbnail.is_file() else None,
        scamp_inputs=len(scamp_list),
        swarp_inputs=len(swarp_list),
        exptime=exptime,
        seeing=seeing,
        scamp_internal_rms=internal,
        scamp_external_rms=external,
        background=background,
        background_rms=background_rms,
        sources=sources,
        completeness=completeness,
        zero_point=zero_point,
    )


def _listed(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.is_file() else []


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _axes_rms(text: str | None) -> float | None:
    """``"0.0142 0.0128"`` (arcsec per axis) -> the 2-D RMS."""
    values = [_number(v) for v in (text or "").split()]
    if not values or any(v is None for v in values):
        return None
    return math.sqrt(sum(v * v for v in values if v is not None))


def _scamp_rms(path: Path, owner: str) -> tuple[float | None, float | None]:
    rows = votable_rows(path, "FGroups", owner, what="SCAMP's XML")
    if not rows:
        raise QfinFailed(f"{owner}: SCAMP's {path} has no field group")
    internal = [_axes_rms(r.get("AstromSigma_Internal")) for r in rows]
    external = [_axes_rms(r.get("AstromSigma_Reference")) for r in rows]
    return _worst(internal), _worst(external)


def _worst(values: list[float | None]) -> float | None:
    # SCAMP writes 0 where it had nothing to measure (no reference matched).
    present = [v for v in values if v is not None and v > 0]
    return max(present) if present else None


def _background(path: Path, owner: str) -> tuple[float | None, float | None, int]:
    rows = votable_rows(path, "Extension_Data", owner, what="source-extractor's XML")
    if not rows:
        raise QfinFailed(f"{owner}: source-extractor's {path} has no extension")
    means = [v for r in rows if (v := _number(r.get("Background_Mean"))) is not None]
    rms = [v for r in rows if (v := _number(r.get("Background_StDev"))) is not None]
    sources = sum(int(_number(r.get("NSextracted")) or 0) for r in rows)
    return (statistics.median(means) if means else None,
            statistics.median(rms) if rms else None, sources)  # fmt: skip


def _seeing(path: Path, owner: str) -> float | None:
    rows = psfex_extensions(path, owner)
    values = [v for r in rows.values() if (v := _number(r.get("FWHM_WCS_Mean"))) and v > 0]
    return statistics.median(values) if values else None


def _exptime(images: list[str], swarp_xml: Path, owner: str) -> float | None:
    """Sum of the inputs' EXPTIME; SWarp's own per-frame values must agree where it had
    them (it reads EXPTIME from each CCD's header, where an exposure may not carry it)."""
    import fitsio

    total = 0.0
    for image in images:
        try:
            value = fitsio.read_header(image, 0).get("EXPTIME")
        except OSError as exc:
            raise QfinFailed(f"{owner}: SWarp input {image} is unreadable ({exc})") from exc
        seconds = _number(str(value)) if value is not None else None
        if seconds is None:
            return None
        total += seconds
    frames: dict[str, float] = {}
    for row in votable_rows(swarp_xml, "Input_Image_Data", owner, what="SWarp's XML"):
        seconds = _number(row.get("ExpTime"))
        if seconds:
            frames[row.get("Image_Name", "")] = seconds
    swarp_total = sum(frames.values())
    if frames and len(frames) == len(images) and abs(swarp_total - total) > 1e-6 * total:
        raise QfinFailed(
            f"{owner}: SWarp's inputs total {swarp_total} s of exposure ({swarp_xml}), "
            f"their headers {total} s"
        )
    return total


def _completeness(out: StackOutputs) -> tuple[float | None, float | None]:
    """80 % completeness and zero point of the injected copy; None when there is none."""
    from spica_core.stacking.completeness import (
        CompletenessFailed,
        completeness,
        injected_truth,
    )

    if not (out.inject_truth.is_file() and out.inject_catalog.is_file()):
        return None, None
    try:
        truth = injected_truth(out.inject_truth)
        return completeness(out.inject_truth, out.inject_catalog), truth.zero_point
    except CompletenessFailed:
        return None, None

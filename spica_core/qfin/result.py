"""What QFin measures: the figures of each CCD and of the whole image.

These records are the contract between the reading of the tools' outputs
(:mod:`spica_core.qfin.measure`), the per-image report written beside them, the grade
proposal (:mod:`spica_core.qfin.grades`) and the writer of the image's row in dbspica. They
are msgspec structs so the report is their JSON encoding, read back strictly.
"""

from __future__ import annotations

import msgspec

#: Grades, best first (the seed's QFin validation).
GRADES = ("A", "B", "C", "D")


class CcdFigures(msgspec.Struct, frozen=True, kw_only=True):
    """One CCD (1-based extension number ``ccd`` of the MEF)."""

    ccd: int
    extname: str | None = None
    #: PSF FWHM in arcsec (PSFEx's ``FWHM_WCS``), None when PSFEx found no PSF.
    seeing: float | None
    #: Mean A/B of the PSF stars.
    elongation: float | None
    sources: int
    psf_stars: int
    #: SExtractor's background level and RMS (ADU).
    background: float
    background_rms: float
    #: The saturation level used (ADU).
    saturation: float | None


class ImageFigures(msgspec.Struct, frozen=True, kw_only=True):
    """The image: medians over its measured CCDs, sums of counts."""

    image: str
    release: str
    ccds: list[CcdFigures]
    #: CCDs the header announces (``extensions``); fewer measured ones mean missing CCDs.
    ccds_expected: int
    seeing: float | None
    elongation: float | None
    sources: int
    psf_stars: int
    background: float
    background_rms: float
    exptime: float | None = None
    filter: str | None = None


class GradeProposal(msgspec.Struct, frozen=True, kw_only=True):
    """QFin's automatic grade and why (one reason per threshold that lowered it)."""

    grade: str
    reasons: list[str]


class QfinReport(msgspec.Struct, frozen=True, kw_only=True):
    """The QualityFITS-like per-image report (``<image>.qfin.json`` beside the outputs)."""

    figures: ImageFigures
    proposal: GradeProposal
    #: Absolute paths on the node: the image, its weight and flag maps, catalogue, PSF model.
    image_path: str
    weight_path: str | None
    flag_path: str | None
    catalog_path: str
    psf_path: str | None
    #: Application name -> version the unit ran with.
    versions: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: str = ""

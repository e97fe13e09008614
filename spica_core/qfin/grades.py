"""QFin's automatic grade proposal: A-D from the release's thresholds, with its reasons.

Each criterion (seeing, elongation, missing CCDs, source counts against the exposure's
expectation) grades the image on its own against three inclusive limits
(:class:`spica_core.config.GradeThresholds`); the proposal is the worst of them, and every
criterion that lowered it below A gives one reason naming the figure and the limit it passed,
in the wording of the seed's comment list where one fits. The operator's grade is separate
(:mod:`spica_core.qfin.grading`); the proposal only informs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from spica_core.config import GradeThresholds
from spica_core.qfin.result import GRADES, GradeProposal, ImageFigures


def propose(figures: ImageFigures, thresholds: GradeThresholds) -> GradeProposal:
    """The worst grade over the criteria and one reason per criterion that lowered it."""
    grades = ["A"]
    reasons: list[str] = []
    for grade, reason in _criteria(figures, thresholds):
        grades.append(grade)
        reasons.append(reason)
    return GradeProposal(grade=max(grades, key=GRADES.index), reasons=reasons)


def expected_sources(figures: ImageFigures, thresholds: GradeThresholds) -> float | None:
    """Sources expected on the measured CCDs for the exposure time; None when not checked
    (criterion off, exposure time unknown, or no CCD measured)."""
    if thresholds.expected_sources <= 0 or not figures.exptime or figures.exptime <= 0:
        return None
    if not figures.ccds:
        return None
    depth: float = (figures.exptime / thresholds.reference_exptime) ** thresholds.counts_alpha
    return thresholds.expected_sources * len(figures.ccds) * depth


def _criteria(figures: ImageFigures, t: GradeThresholds) -> Iterator[tuple[str, str]]:
    """(grade, reason) of each criterion that grades the image below A."""
    if figures.seeing is None:
        yield "D", "Seeing not measured (PSFEx found no PSF)"
    else:
        grade, limit = _above(figures.seeing, t.seeing)
        if limit is not None:
            yield grade, f"Poor seeing (>{limit:g}): {figures.seeing:.2f} arcsec"
    # An unmeasured elongation goes with an unmeasured seeing (no PSF): reported once above.
    if figures.elongation is not None:
        grade, limit = _above(figures.elongation, t.elongation)
        if limit is not None:
            yield grade, f"Elongated image (>{limit:g}): elongation {figures.elongation:.2f}"
    missing = max(figures.ccds_expected - len(figures.ccds), 0)
    grade, limit = _above(missing, t.missing_ccds)
    if limit is not None:
        yield (
            grade,
            f"Some CCDs or half-CCDs missing (>{limit:g}): "
            f"{missing} of {figures.ccds_expected} not measured",
        )
    expected = expected_sources(figures, t)
    if expected is not None:
        ratio = figures.sources / expected
        counted = f"{figures.sources} sources, {ratio:.2f} of the {expected:.0f} expected"
        grade, limit = _below(ratio, t.counts_low)
        if limit is not None:
            yield grade, f"Galaxy counts below expectations (<{limit:g}): {counted}"
        grade, limit = _above(ratio, t.counts_high)
        if limit is not None:
            yield grade, f"Galaxy counts above expectations (>{limit:g}): {counted}"


def _above(value: float, limits: tuple[float, ...]) -> tuple[str, float | None]:
    """Grade of a figure whose A, B, C limits are maxima, and the limit it passed."""
    return _graded(value, limits, lambda v, limit: v <= limit)


def _below(value: float, limits: tuple[float, ...]) -> tuple[str, float | None]:
    """Grade of a figure whose A, B, C limits are minima, and the limit it fell under."""
    return _graded(value, limits, lambda v, limit: v >= limit)


def _graded(
    value: float, limits: tuple[float, ...], within: Callable[[float, float], bool]
) -> tuple[str, float | None]:
    for index, limit in enumerate(limits):
        if within(value, limit):
            return GRADES[index], limits[index - 1] if index else None
    return GRADES[len(limits)], limits[-1]

"""QFin's automatic grade proposal at the edges of every threshold, and the thresholds' checks."""

from __future__ import annotations

import msgspec
import pytest

from spica_core.config import GradeThresholds, parse_config
from spica_core.errors import ConfigError
from spica_core.qfin.grades import expected_sources, propose
from spica_core.qfin.result import CcdFigures, ImageFigures

#: Limits chosen so every edge is an exact float: seeing 1.0/1.2/1.5, elongation
#: 1.25/1.5/1.75, counts per CCD 100 at 100 s (alpha 0.5), ratios 0.75/0.5/0.25 and 1.5/2/3.
T = GradeThresholds(
    seeing=(1.0, 1.2, 1.5),
    elongation=(1.25, 1.5, 1.75),
    missing_ccds=(0, 1, 3),
    expected_sources=100.0,
    reference_exptime=100.0,
    counts_alpha=0.5,
    counts_low=(0.75, 0.5, 0.25),
    counts_high=(1.5, 2.0, 3.0),
)


def figures(
    *,
    seeing: float | None = 0.8,
    elongation: float | None = 1.05,
    ccds: int = 4,
    expected_ccds: int = 4,
    sources: int = 400,
    exptime: float | None = 100.0,
) -> ImageFigures:
    """An image of ``ccds`` measured CCDs; 400 sources over 4 CCDs at 100 s is ratio 1."""
    ccd = CcdFigures(
        ccd=1,
        seeing=seeing,
        elongation=elongation,
        sources=sources // max(ccds, 1),
        psf_stars=20,
        background=1000.0,
        background_rms=30.0,
        saturation=60000.0,
    )
    return ImageFigures(
        image="811001p",
        release="T0003",
        ccds=[msgspec.structs.replace(ccd, ccd=i + 1) for i in range(ccds)],
        ccds_expected=expected_ccds,
        seeing=seeing,
        elongation=elongation,
        sources=sources,
        psf_stars=20 * ccds,
        background=1000.0,
        background_rms=30.0,
        exptime=exptime,
        filter="r",
    )


def test_a_good_image_is_proposed_a_without_reasons() -> None:
    proposal = propose(figures(), T)
    assert (proposal.grade, proposal.reasons) == ("A", [])


@pytest.mark.parametrize(
    ("seeing", "grade", "reason"),
    [
        (1.0, "A", None),
        (1.0001, "B", "Poor seeing (>1): 1.00 arcsec"),
        (1.2, "B", "Poor seeing (>1): 1.20 arcsec"),
        (1.2001, "C", "Poor seeing (>1.2): 1.20 arcsec"),
        (1.5, "C", "Poor seeing (>1.2): 1.50 arcsec"),
        (1.5001, "D", "Poor seeing (>1.5): 1.50 arcsec"),
        (None, "D", "Seeing not measured (PSFEx found no PSF)"),
    ],
)
def test_seeing_edges(seeing: float | None, grade: str, reason: str | None) -> None:
    proposal = propose(figures(seeing=seeing), T)
    assert proposal.grade == grade
    assert proposal.reasons == ([reason] if reason else [])


@pytest.mark.parametrize(
    ("elongation", "grade", "limit"),
    [
        (1.25, "A", None),
        (1.2501, "B", "1.25"),
        (1.5, "B", "1.25"),
        (1.5001, "C", "1.5"),
        (1.75, "C", "1.5"),
        (1.7501, "D", "1.75"),
    ],
)
def test_elongation_edges(elongation: float, grade: str, limit: str | None) -> None:
    proposal = propose(figures(elongation=elongation), T)
    assert proposal.grade == grade
    if limit is None:
        assert proposal.reasons == []
    else:
        assert proposal.reasons == [f"Elongated image (>{limit}): elongation {elongation:.2f}"]


@pytest.mark.parametrize(
    ("measured", "grade", "limit"),
    [(8, "A", None), (7, "B", "0"), (6, "C", "1"), (5, "C", "1"), (4, "D", "3")],
)
def test_missing_ccd_edges(measured: int, grade: str, limit: str | None) -> None:
    # Sources scale with the measured CCDs so the count criterion stays at ratio 1.
    proposal = propose(figures(ccds=measured, expected_ccds=8, sources=100 * measured), T)
    assert proposal.grade == grade
    if limit is None:
        assert proposal.reasons == []
    else:
        missing = 8 - measured
        assert proposal.reasons == [
            f"Some CCDs or half-CCDs missing (>{limit}): {missing} of 8 not measured"
        ]


@pytest.mark.parametrize(
    ("sources", "grade", "reason"),
    [
        (300, "A", None),
        (299, "B", "Galaxy counts below expectations (<0.75): 299 sources, 0.75 of the 400"),
        (200, "B", "Galaxy counts below expectations (<0.75): 200 sources, 0.50 of the 400"),
        (199, "C", "Galaxy counts below expectations (<0.5): 199 sources, 0.50 of the 400"),
        (100, "C", "Galaxy counts below expectations (<0.5): 100 sources, 0.25 of the 400"),
        (99, "D", "Galaxy counts below expectations (<0.25): 99 sources, 0.25 of the 400"),
        (600, "A", None),
        (601, "B", "Galaxy counts above expectations (>1.5): 601 sources, 1.50 of the 400"),
        (800, "B", "Galaxy counts above expectations (>1.5): 800 sources, 2.00 of the 400"),
        (801, "C", "Galaxy counts above expectations (>2): 801 sources, 2.00 of the 400"),
        (1200, "C", "Galaxy counts above expectations (>2): 1200 sources, 3.00 of the 400"),
        (1201, "D", "Galaxy counts above expectations (>3): 1201 sources, 3.00 of the 400"),
    ],
)
def test_source_count_edges(sources: int, grade: str, reason: str | None) -> None:
    proposal = propose(figures(sources=sources), T)
    assert proposal.grade == grade
    if reason is None:
        assert proposal.reasons == []
    else:
        assert proposal.reasons == [f"{reason} expected"]


def test_expected_count_scales_with_exposure_time_and_measured_ccds() -> None:
    # 4 CCDs at 400 s: 100 * 4 * (400/100) ** 0.5 = 800 expected.
    assert expected_sources(figures(exptime=400.0), T) == 800.0
    assert propose(figures(exptime=400.0, sources=800), T).grade == "A"
    assert propose(figures(exptime=400.0, sources=400), T).grade == "B"
    # No exposure time, no CCD or the criterion off: counts are not graded.
    assert expected_sources(figures(exptime=None), T) is None
    assert propose(figures(exptime=None, sources=1), T).grade == "A"
    off = T.model_copy(update={"expected_sources": 0.0})
    assert propose(figures(sources=1), off).grade == "A"


def test_the_proposal_is_the_worst_criterion_with_every_reason() -> None:
    proposal = propose(figures(seeing=1.3, elongation=1.3, sources=250), T)
    assert proposal.grade == "C"
    assert [r.split(" (")[0] for r in proposal.reasons] == [
        "Poor seeing",
        "Elongated image",
        "Galaxy counts below expectations",
    ]


def test_defaults_match_the_seed_comment_and_leave_counts_off() -> None:
    defaults = GradeThresholds()
    assert propose(figures(seeing=1.21, sources=1), defaults).reasons == [
        "Poor seeing (>1.2): 1.21 arcsec"
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("seeing = [1.2, 1.0, 1.5]", "key release.grades.seeing: the limit for B (1.0) must be"),
        ("seeing = [-1, 1.0, 1.5]", "key release.grades.seeing: the limit for A is negative"),
        ("seeing = [0, 1.0, 1.5]", "key release.grades.seeing: a seeing limit is positive"),
        ("seeing = [1.0, 1.2]", "key release.grades.seeing"),
        ("elongation = [0.9, 1.2, 1.5]", "key release.grades.elongation: an elongation"),
        ("missing_ccds = [0, 2, 1]", "key release.grades.missing_ccds: the limit for C (1)"),
        ("counts_low = [0.3, 0.5, 0.7]", "key release.grades.counts_low: the limit for B (0.5)"),
        ("counts_high = [3, 2, 1.5]", "key release.grades.counts_high: the limit for B (2"),
        ("counts_low = [2, 1, 0.5]", "key release.grades: counts_low A (2.0) is above"),
        ("reference_exptime = 0", "key release.grades.reference_exptime"),
        ("expected_sources = -5", "key release.grades.expected_sources"),
        ("seeing = [1.0, 1.2, nan]", "key release.grades.seeing"),
        ("sharpness = 3", "key release.grades.sharpness: unknown key"),
    ],
)
def test_bad_thresholds_name_the_key(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[release.grades]\n{body}\n", "/etc/spica/spica.toml")
    assert str(info.value).startswith("/etc/spica/spica.toml:")
    assert expected in str(info.value)


def test_thresholds_are_read_from_the_release_table() -> None:
    config = parse_config(
        "[release]\nname = 'T0004'\n[release.grades]\nseeing = [0.8, 1.0, 1.2]\n", "f.toml"
    )
    assert config.release.grades.seeing == (0.8, 1.0, 1.2)
    assert config.release.grades.counts_low == GradeThresholds().counts_low


def test_the_example_config_documents_every_threshold_with_its_default() -> None:
    from spica_core.config import load_config
    from spica_core.resources import example_config

    example = load_config(example_config()).release.grades
    # The example sets the expected count of a MegaCam CCD; the default leaves counts off.
    assert example == GradeThresholds(expected_sources=1500.0)
    assert GradeThresholds().expected_sources == 0
    text = example_config().read_text()
    assert "[release.grades]" in text
    for key in GradeThresholds.model_fields:
        assert f"\n{key} = " in text, key

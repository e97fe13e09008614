"""A release's rules at their edges: grades, exposure time, seeing (per filter), airmass,
filters, QFin status and placement, each refusal with its reason."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from spica_core.auto.images import AutoImage
from spica_core.auto.rules import refusal, seeing_limit, select_images
from spica_core.config import StackRulesConfig

#: The seed's T0003 and T0004.
T0003 = StackRulesConfig(
    grades=["A", "B"], min_exptime=60, max_seeing=1.1, max_seeing_filter={"u": 1.4}
)
T0004 = T0003.model_copy(update={"max_airmass": 1.7})


def image(**columns: Any) -> AutoImage:
    base = AutoImage(
        id=1, filename="805282p", filter="r.MP9601", ra=34.5, dec=-7.0, exptime=300.0,
        airmass=1.2, seeing=0.8, grade="A", qf_status="done", node="mix1",
        partition="raid1", path="/data/raid1/03AL01/805282p.fits.fz", runid="03AL01",
        bytes=100, checksum=None, phot_c=30.0, phot_k=0.1, weight_path=None, flag_path=None,
    )  # fmt: skip
    return replace(base, **columns)


def test_a_good_image_is_taken() -> None:
    assert refusal(T0003, image()) is None
    assert refusal(T0004, image()) is None


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"grade": "C"}, "grade C"),
        ({"grade": "D"}, "grade D"),
        ({"grade": None}, "not graded"),
        ({"exptime": 60.0}, "exposure 60 s not above 60 s"),  # strictly more than 60 s
        ({"exptime": None}, "exposure unknown"),
        ({"seeing": 1.1}, 'seeing 1.1" not below 1.1"'),  # strictly less than 1.1"
        ({"seeing": None}, "seeing unknown"),
        ({"qf_status": "failed"}, "QFin not done (status failed)"),
        ({"qf_status": "planned"}, "QFin not done"),
        ({"node": None}, "not on a node"),
        ({"path": None}, "not on a node"),
        ({"ra": None}, "no pointing"),
        ({"filter": None}, "no filter"),
    ],
)
def test_refusals_at_the_edges(columns: dict[str, Any], reason: str) -> None:
    why = refusal(T0003, image(**columns))
    assert why is not None and why.startswith(reason), why


def test_just_inside_the_limits() -> None:
    assert refusal(T0003, image(exptime=60.001)) is None
    assert refusal(T0003, image(seeing=1.0999)) is None
    assert refusal(T0003, image(grade="B")) is None


def test_per_filter_seeing_by_letter_or_full_name() -> None:
    u = image(filter="u.MP9301")
    assert seeing_limit(T0003, "u.MP9301") == 1.4
    assert seeing_limit(T0003, "r.MP9601") == 1.1
    assert refusal(T0003, replace(u, seeing=1.3)) is None  # u: 1.4"
    assert refusal(T0003, replace(u, seeing=1.4)) == 'seeing 1.4" not below 1.4" (u.MP9301)'
    assert refusal(T0003, image(seeing=1.3)) is not None  # r: 1.1"
    by_name = StackRulesConfig(max_seeing=1.1, max_seeing_filter={"u": 1.4, "u.MP9301": 1.2})
    assert seeing_limit(by_name, "u.MP9301") == 1.2  # the full name first
    assert seeing_limit(StackRulesConfig(), "r.MP9601") is None
    assert refusal(StackRulesConfig(), image(seeing=None)) is None  # no limit: no need


def test_airmass_only_where_the_release_limits_it() -> None:
    high = image(airmass=1.7)
    assert refusal(T0003, high) is None
    assert refusal(T0004, high) == "airmass 1.7 not below 1.7"
    assert refusal(T0004, image(airmass=1.699)) is None
    assert refusal(T0004, image(airmass=None)) == "airmass unknown not below 1.7"


def test_filters_by_letter_or_name() -> None:
    only_u = StackRulesConfig(filters=["u", "i.MP9702"])
    assert refusal(only_u, image(filter="u.MP9301")) is None
    assert refusal(only_u, image(filter="i.MP9702")) is None
    assert refusal(only_u, image(filter="y")) is None  # i.MP9702's letter
    assert refusal(only_u, image(filter="i.MP9701")) == (
        "filter i.MP9701 not stacked (filters u, i.MP9702)"
    )


def test_select_splits_and_keeps_reasons() -> None:
    images = [image(id=1, filename="a"), image(id=2, filename="b", grade="C")]
    accepted, refused = select_images(T0003, images)
    assert [i.filename for i in accepted] == ["a"]
    assert [(r.image, r.reason) for r in refused] == [("b", "grade C (the release takes A, B)")]

"""The images read model: filters, ranges, the filename regex and scopes (both engines)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from spica_core.errors import UsageError
from spica_core.read_model import ImageQuery, Range, Scope, list_images
from tests.image_support import seed_images


@pytest.fixture
def images_db(db_engine: Engine) -> Engine:
    seed_images(db_engine)
    return db_engine


def names(engine: Engine, **query: object) -> list[str]:
    return [r.image for r in list_images(engine, ImageQuery(**query))]  # type: ignore[arg-type]


def test_every_image_by_runid_then_name(images_db: Engine) -> None:
    assert names(images_db) == [
        "775333p",
        "775334p",
        "806860p",
        "807009p",
        "810150p",
        "810998p",
        "811001p",
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"runid": "04BF28"}, ["775333p", "775334p"]),
        ({"filter": "i"}, ["810150p"]),
        ({"grade": "A"}, ["810998p"]),
        ({"grade": "none"}, ["775334p", "806860p", "807009p", "811001p"]),
        ({"qf": "failed"}, ["806860p"]),
        ({"qf": "planned"}, ["807009p"]),
        ({"node": "mix3"}, ["806860p", "810150p"]),
        ({"object": "Pre-W1_159"}, ["810150p", "810998p", "811001p"]),
        ({"match": "^81"}, ["810150p", "810998p", "811001p"]),
        ({"match": "3P$"}, ["775333p"]),
        ({"seeing": Range(0.8, 0.91)}, ["807009p", "810998p", "811001p"]),
        ({"seeing": Range(1.25, None)}, ["775333p", "810150p"]),
        ({"airmass": Range(None, 1.1)}, ["775333p", "775334p"]),
        ({"background": Range(1000, 2400)}, ["806860p", "810150p", "811001p"]),
        ({"exptime": Range(200, None)}, ["806860p"]),
        ({"runid": "05BL02", "filter": "r", "seeing": Range(0.85, 1.0)}, ["810998p", "811001p"]),
    ],
)
def test_filters_and_ranges(
    images_db: Engine, query: dict[str, object], expected: list[str]
) -> None:
    assert names(images_db, **query) == expected


def test_a_row_carries_figures_proposal_and_grade(images_db: Engine) -> None:
    (row,) = list_images(images_db, ImageQuery(match="810150p"))
    data = row.to_json()
    assert data["image"] == "810150p" and data["runid"] == "05BL02" and data["node"] == "mix3"
    assert (data["seeing"], data["background"], data["sources"]) == (1.25, 1540.0, 1200)
    assert (data["proposal"], data["grade"]) == ("C", "C")
    assert data["reasons"] == ["Poor seeing (>1.2): 1.25 arcsec"]
    assert data["date_obs"] == "2005-09-09T00:00:00Z"
    # A session works as well as an engine, and limit/offset page in SQL.
    with Session(images_db) as session:
        page = list_images(session, ImageQuery(), limit=2, offset=1)
    assert [r.image for r in page] == ["775334p", "806860p"]


def test_a_runid_scope_sees_its_runids_without_node_internals(images_db: Engine) -> None:
    scope = Scope.of_runids(["04BF28"])
    rows = list_images(images_db, ImageQuery(scope=scope))
    assert [r.image for r in rows] == ["775333p", "775334p"]
    assert all(r.node is None and r.qf_error is None for r in rows)
    assert list_images(images_db, ImageQuery(scope=scope, runid="05BL02")) == []
    with pytest.raises(UsageError, match="node names are not shown"):
        ImageQuery(scope=scope, node="plat")
    # The operators see the failure's text and the node.
    (failed,) = list_images(images_db, ImageQuery(qf="failed"))
    assert failed.node == "mix3" and failed.qf_error is not None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"grade": "E"}, "--grade 'E': expected one of A, B, C, D or none"),
        ({"qf": "sleeping"}, "--qf 'sleeping'"),
        ({"node": "mix;4"}, "invalid node name"),
        ({"seeing": Range(1.2, 0.8)}, "--seeing: MIN 1.2 is larger than MAX 0.8"),
        ({"match": "(a+)+"}, "--match"),
        ({"runid": "bad\udcff"}, "--runid"),
    ],
)
def test_bad_queries_name_the_option(query: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        ImageQuery(**query)  # type: ignore[arg-type]
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.6:1.2", Range(0.6, 1.2)), ("0.6:", Range(0.6, None)), (":1.2", Range(None, 1.2))],
)
def test_range_syntax(text: str, expected: Range) -> None:
    assert Range.parse(text, "--seeing") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.2", "expected MIN:MAX"),
        ("a:b", "must be numbers"),
        ("nan:1", "not a finite number"),
        ("2:1", "MIN 2 is larger than MAX 1"),
    ],
)
def test_bad_ranges(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="--seeing") as info:
        Range.parse(text, "--seeing")
    assert message in str(info.value)

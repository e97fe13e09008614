"""The operator's grade: validated as a whole, applied all or nothing, audited (both engines)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Image
from spica_core.qfin.grading import (
    COMMENTS,
    MAX_COMMENT,
    GradeRefused,
    check_comment,
    grade_images,
    preview_grades,
)
from tests.image_support import audit, grades, seed_images


@pytest.fixture
def graded_db(db_engine: Engine) -> Engine:
    seed_images(db_engine)
    return db_engine


def test_grading_applies_and_audits_in_one_go(graded_db: Engine) -> None:
    before = grades(graded_db)
    outcome = grade_images(
        graded_db, ["811001p", "810150p"], "b", comment=COMMENTS[0], user="mbertin"
    )
    assert outcome.applied and outcome.grade == "B" and outcome.comment == "Poor seeing (>1.2)"
    after = grades(graded_db)
    assert after["811001p"] == ("B", "Poor seeing (>1.2)", "mbertin")
    assert after["810150p"] == ("B", "Poor seeing (>1.2)", "mbertin")
    assert {k: v for k, v in after.items() if k not in ("811001p", "810150p")} == {
        k: v for k, v in before.items() if k not in ("811001p", "810150p")
    }
    # 810150p was graded C before: a regrade, shown before -> after.
    assert [i.image for i in outcome.regraded] == ["810150p"]
    assert outcome.plan_lines() == [
        "811001p: not graded -> B (Poor seeing (>1.2))",
        "810150p: C (Poor seeing (>1.2)) -> B (Poor seeing (>1.2))",
    ]
    (row,) = audit(graded_db)
    assert (row.id, row.user, row.action, row.result, row.dry_run) == (
        outcome.audit_id,
        "mbertin",
        "grade",
        "applied",
        False,
    )
    assert row.targets == ["811001p", "810150p"]
    assert row.detail["before"] == {"811001p": None, "810150p": "C"}
    assert row.detail["grade"] == "B" and row.plan is not None and "810150p: C" in row.plan
    with Session(graded_db) as s:
        image = s.scalars(select(Image).where(Image.filename == "811001p")).one()
        assert image.graded_at is not None


def test_dry_run_and_preview_change_nothing(graded_db: Engine) -> None:
    before = grades(graded_db)
    preview = preview_grades(graded_db, ["775333p"], "A", comment=None, user="ops")
    assert [i.before for i in preview.images] == ["B"] and not preview.applied
    assert audit(graded_db) == []
    dry = grade_images(graded_db, ["775333p"], "A", comment=None, user="ops", dry_run=True)
    assert not dry.applied
    assert grades(graded_db) == before
    (row,) = audit(graded_db)
    assert (row.result, row.dry_run) == ("dry-run", True)


@pytest.mark.parametrize(
    ("images", "grade", "comment", "message"),
    [
        (
            ["811001p", "nope1", "nope2"],
            "A",
            None,
            "unknown image(s), not in dbspica: nope1, nope2",
        ),
        (["811001p"], "E", None, "grade 'E' refused: expected one of A, B, C, D"),
        (["811001p"], "AB", None, "grade 'AB' refused"),
        (["811001p"], "", None, "grade '' refused"),
        (["811001p"], "A", "\x1b]0;owned\x07", "character 1 is a control or format character"),
        (["811001p"], "A", "ok\x1b[2Jcleared", "character 3 is a control or format character"),
        (["811001p"], "A", "two\nlines", "(\\x0a)"),
        (["811001p"], "A", "x" * 10240, "comment refused: 10240 characters, at most 200"),
        (["811001p"], "A", "abc\u202edcba", "(U+202E)"),
        (["811001p"], "A", "\x9b2J", "(\\x9b)"),
        (["811001p", "../etc/passwd"], "A", None, "invalid image name '../etc/passwd'"),
        ([], "A", None, "no image given"),
    ],
)
def test_refusals_apply_nothing_and_are_audited(
    graded_db: Engine, images: list[str], grade: str, comment: str | None, message: str
) -> None:
    before = grades(graded_db)
    with pytest.raises(GradeRefused) as info:
        grade_images(graded_db, images, grade, comment=comment, user="ops")
    assert message in str(info.value)
    assert grades(graded_db) == before
    (row,) = audit(graded_db)
    assert row.result == "refused" and message in row.detail["message"]
    # Neither the hostile comment nor a hostile name is kept in the audit.
    assert "\x1b" not in repr(row.detail) and "../etc" not in str(row.targets)


def test_a_comment_is_one_bounded_printable_line() -> None:
    for comment in COMMENTS:
        assert check_comment(comment) == comment
    assert check_comment("  Défocalisé, guidage perdu ?  ") == "Défocalisé, guidage perdu ?"
    assert check_comment("") is None and check_comment("   ") is None
    assert check_comment("x" * MAX_COMMENT) == "x" * MAX_COMMENT
    with pytest.raises(GradeRefused):
        check_comment("x" * (MAX_COMMENT + 1))
    with pytest.raises(GradeRefused, match="not valid UTF-8"):
        check_comment("bad \udcff byte")


def test_a_bad_operator_name_is_refused_before_anything(graded_db: Engine) -> None:
    with pytest.raises(Exception, match="--as"):
        grade_images(graded_db, ["811001p"], "A", comment=None, user="a b;rm")
    assert audit(graded_db) == []

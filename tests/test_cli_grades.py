"""``spica grade`` and ``spica images`` through the real command line, on both engines: run
in-process, and in a subprocess with a terminal where the operator is asked."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Image
from tests.conftest import invoke_spica, run_spica_at_a_terminal
from tests.image_support import audit, grades, seed_images


@pytest.fixture
def db(db_url: str, db_engine: Engine) -> tuple[str, Engine]:
    seed_images(db_engine)
    return db_url, db_engine


def spica(url: str, *args: str, stdin: str | None = None):
    return invoke_spica(*args, env={"SPICA_DB_URL": url}, input=stdin)


def test_grade_applies_and_audits(db: tuple[str, Engine]) -> None:
    url, engine = db
    done = spica(url, "grade", "811001p", "807009p", "B", "--comment", "Defocus?", "--as", "yg")
    assert done.returncode == 0, done.stderr
    assert "graded 811001p: not graded -> B (Defocus?)" in done.stdout
    assert "2 image(s) graded B" in done.stdout
    after = grades(engine)
    assert after["811001p"] == after["807009p"] == ("B", "Defocus?", "yg")
    (row,) = audit(engine)
    assert (row.user, row.action, row.result, row.targets) == (
        "yg",
        "grade",
        "applied",
        ["811001p", "807009p"],
    )
    # The audit command shows it like every operator action.
    shown = spica(url, "audit", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["action"] == "grade"


def test_regrading_shows_before_and_after_and_asks(db: tuple[str, Engine]) -> None:
    url, engine = db
    before = grades(engine)
    # No terminal to confirm on: refused, nothing changed.
    asked = spica(url, "grade", "810150p", "A", "--as", "yg")
    assert asked.returncode == 2
    assert "810150p: C (Poor seeing (>1.2)) -> A" in asked.stderr
    assert "pass --yes" in asked.stderr
    assert grades(engine) == before and audit(engine) == []
    dry = spica(url, "grade", "810150p", "A", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    data = json.loads(dry.stdout)
    assert data["applied"] is False and data["images"][0]["before"] == "C"
    assert grades(engine) == before
    done = spica(url, "grade", "810150p", "A", "--yes", "--json", "--as", "yg")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["applied"] is True and data["grade"] == "A" and data["audit_id"]
    assert grades(engine)["810150p"] == ("A", None, "yg")
    assert [r.result for r in audit(engine)] == ["dry-run", "applied"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["811001p", "E"], "grade 'E' refused: expected one of A, B, C, D"),
        (["811001p", "nosuch9p", "A"], "unknown image(s), not in dbspica: nosuch9p"),
        (["A"], "Missing argument 'IMAGE'"),
        (["811001p", "A", "--comment", "\x1b]0;pwned\x07\x1b[2J"], "control or format character"),
        (["811001p", "A", "--comment", "line one\nline two"], "character 9 is a control"),
        (["811001p", "A", "--comment", "x" * 10240], "10240 characters, at most 200"),
        (["811001p", "A", "--as", "x;y"], "--as 'x;y'"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(
    db: tuple[str, Engine], args: list[str], message: str
) -> None:
    url, engine = db
    before = grades(engine)
    refused = spica(url, "grade", *args, "--yes")
    assert refused.returncode == 2
    assert message in refused.stderr
    assert "\x1b" not in refused.stderr and "\x1b" not in refused.stdout
    assert grades(engine) == before
    assert all(r.result == "refused" for r in audit(engine))


def test_images_table_and_json(db: tuple[str, Engine]) -> None:
    url, _ = db
    shown = spica(url, "images", "--runid", "05BL02", "--filter", "r")
    assert shown.returncode == 0, shown.stderr
    header = shown.stdout.splitlines()[0].split()
    assert header[:4] == ["image", "runid", "filter", "object"]
    assert header[-4:] == ["grade", "qf", "status", "node"]
    lines = {line.split()[0]: line.split() for line in shown.stdout.splitlines()[1:-1]}
    assert set(lines) == {"806860p", "807009p", "810998p", "811001p"}
    assert lines["811001p"][4:] == [
        "180.06",
        "1.165",
        "0.91",
        "1012.5",
        "1200",
        "A",
        "-",
        "done",
        "mix4",
    ]
    assert "4 image(s)" in shown.stdout
    as_json = spica(url, "images", "--seeing", "0.8:0.91", "--grade", "none", "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [r["image"] for r in rows] == ["807009p", "811001p"]
    assert rows[1]["seeing"] == 0.91 and rows[1]["proposal"] == "A" and rows[1]["grade"] is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--grade", "a"], ["810998p"]),
        (["--qf", "failed"], ["806860p"]),
        (["--node", "plat"], ["775333p"]),
        (["--airmass", ":1.1", "--exptime", "50:70"], ["775333p", "775334p"]),
        (["--background", "1500:", "--limit", "2"], ["775333p", "806860p"]),
        (["--match", "^8109|^8110"], ["810998p", "811001p"]),
        (["--object", "Tau03B-1", "--seeing", "1.3:"], ["775333p"]),
    ],
)
def test_images_filters(db: tuple[str, Engine], args: list[str], expected: list[str]) -> None:
    url, _ = db
    shown = spica(url, "images", *args, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [r["image"] for r in json.loads(shown.stdout)] == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeing", "1.2"], "--seeing '1.2': expected MIN:MAX"),
        (["--airmass", "2:1"], "--airmass: MIN 2 is larger than MAX 1"),
        (["--grade", "Z"], "--grade 'Z'"),
        (["--qf", "busy"], "--qf 'busy'"),
    ],
)
def test_images_bad_options_exit_2(db: tuple[str, Engine], args: list[str], message: str) -> None:
    url, _ = db
    shown = spica(url, "images", *args)
    assert shown.returncode == 2
    assert message in shown.stderr


def test_images_never_send_stored_control_characters_to_the_terminal(
    db: tuple[str, Engine],
) -> None:
    url, engine = db
    evil = "\x1b]0;owned\x07\x1b[2J\x9b31m"
    with Session(engine) as s, s.begin():
        image = s.scalars(select(Image).where(Image.filename == "806860p")).one()
        image.object = evil
        image.grade_comment = evil
    shown = spica(url, "images", "--qf", "failed")
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x9b" not in shown.stdout and "\x07" not in shown.stdout
    assert "\\x1b]0;owned" in shown.stdout
    as_json = spica(url, "images", "--qf", "failed", "--json")
    assert "\x1b" not in as_json.stdout and "\x9b" not in as_json.stdout
    assert json.loads(as_json.stdout)[0]["object"] == evil


def _on_a_terminal(url: str, answer: str, *args: str) -> tuple[int, str, str]:
    """``spica`` with a terminal as stdin and stderr (where the question is asked), the
    operator typing ``answer``; (exit code, stdout, what the terminal showed)."""
    code, out, seen = run_spica_at_a_terminal(*args, env={"SPICA_DB_URL": url}, answer=answer)
    return code, out, seen.decode(errors="replace")


def test_a_regrade_is_asked_on_the_terminal(db: tuple[str, Engine]) -> None:
    url, engine = db
    before = grades(engine)
    code, out, terminal = _on_a_terminal(url, "n", "grade", "775333p", "811001p", "C")
    assert code == 1
    assert "775333p: B -> C" in terminal and "Apply?" in terminal
    assert "811001p" not in terminal  # not graded before: nothing to ask about
    assert grades(engine) == before and audit(engine) == []
    code, out, terminal = _on_a_terminal(url, "y", "grade", "775333p", "811001p", "C")
    assert code == 0, terminal
    assert "graded 775333p: B -> C" in out and "graded 811001p: not graded -> C" in out
    assert grades(engine)["775333p"][0] == grades(engine)["811001p"][0] == "C"
    assert [r.result for r in audit(engine)] == ["applied"]

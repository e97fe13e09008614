"""The operator's grade of images (the seed's QFin validation), audited.

QFin proposes a grade (:mod:`spica_core.qfin.grades`); an operator decides it, with a comment
from the seed's list (:data:`COMMENTS`) or free text. A request is validated as a whole
before anything changes (every image name, the grade, the comment, the operator) and applied
all or nothing in one transaction with its ``operator_action`` row; a refused request leaves
a refused row and no change. The comment is shown later in tables, the console and the
audit, so it must be one line of printable text: control characters (an ESC sequence would
drive the reader's terminal), bidirectional overrides and oversized text are refused, never
silently cleaned.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Image, OperatorAction
from spica_core.db.types import utcnow
from spica_core.errors import InvalidName, UsageError
from spica_core.names import validate_name
from spica_core.operations.session import operator_name
from spica_core.qfin.result import GRADES
from spica_core.text import printable

#: The seed's comments for a grade (QFin validation); any other printable line is allowed.
COMMENTS: tuple[str, ...] = (
    "Poor seeing (>1.2)",
    "Some CCDs or half-CCDs missing",
    "Defocus?",
    "Elongated image",
    "Telescope lost guiding?",
    "Galaxy counts below expectations",
    "Galaxy counts above expectations",
    "Strong background gradient",
    "Scattered light",
    "Satellite or plane track",
)
#: The longest comment accepted (characters): a sentence, not a file.
MAX_COMMENT = 200
#: Audit action name.
ACTION = "grade"
#: Names per ``IN (…)`` when images are looked up: within every backend's limits.
_NAMES_PER_STATEMENT = 500
#: Unicode categories refused in a comment: controls (C0, DEL, C1: terminal sequences,
#: newlines), format characters (bidirectional overrides that reorder what a reader sees,
#: zero-width characters), surrogates, private use and unassigned code points.
_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn"))


class GradeRefused(UsageError):
    """A grade request refused as a whole: nothing was applied."""


@dataclass(frozen=True)
class GradedImage:
    """One image of a request: its grade and comment before, and QFin's proposal."""

    image: str
    before: str | None
    before_comment: str | None
    proposal: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "before": self.before,
            "before_comment": self.before_comment,
            "proposal": self.proposal,
        }


@dataclass(frozen=True)
class GradeOutcome:
    """What a request did (``applied``) or would do: every image, before and after."""

    grade: str
    comment: str | None
    user: str
    images: tuple[GradedImage, ...]
    applied: bool
    #: The ``operator_action`` row written for it (None for a preview).
    audit_id: int | None = None

    @property
    def regraded(self) -> tuple[GradedImage, ...]:
        """Images that already had another grade (or comment): a regrade the CLI asks for."""
        return tuple(
            i
            for i in self.images
            if i.before is not None and (i.before, i.before_comment) != (self.grade, self.comment)
        )

    def plan_lines(self) -> list[str]:
        """``IMAGE: before -> after`` per image, the text the audit and the CLI show."""
        after = self.grade + (f" ({self.comment})" if self.comment else "")
        lines = []
        for i in self.images:
            before = (i.before or "not graded") + (
                f" ({i.before_comment})" if i.before_comment else ""
            )
            lines.append(f"{i.image}: {before} -> {after}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "grade": self.grade,
            "comment": self.comment,
            "user": self.user,
            "applied": self.applied,
            "audit_id": self.audit_id,
            "images": [i.to_json() for i in self.images],
        }


def grade_images(
    engine: Engine,
    images: Sequence[str],
    grade: str,
    *,
    comment: str | None,
    user: str,
    dry_run: bool = False,
) -> GradeOutcome:
    """Give ``images`` the operator's ``grade`` and ``comment``, all or nothing, audited.

    Raises :class:`GradeRefused` (after a refused audit row) naming every problem found:
    unknown images are all listed. ``dry_run`` validates and audits a dry-run row only.
    """
    user = operator_name(user)
    request = _checked(engine, user, images, grade, comment)
    with Session(engine) as session, session.begin():
        rows = _rows(session, request.images, lock=True)
        unknown = [name for name in request.images if name not in rows]
        if not unknown:
            outcome = request.outcome(rows, user, applied=not dry_run)
            if not dry_run:
                now = utcnow()
                for row in rows.values():
                    row.grade = request.grade
                    row.grade_comment = request.comment
                    row.graded_by = user
                    row.graded_at = now
            audit = _audit_row(
                user,
                request.images,
                "dry-run" if dry_run else "applied",
                dry_run=dry_run,
                plan="\n".join(outcome.plan_lines()),
                detail={
                    "grade": request.grade,
                    "comment": request.comment,
                    "before": {i.image: i.before for i in outcome.images},
                },
            )
            session.add(audit)
            session.flush()
            return replace(outcome, audit_id=audit.id)
    _refused(engine, user, request.images, _unknown(unknown))
    raise GradeRefused(_unknown(unknown))


def preview_grades(
    engine: Engine, images: Sequence[str], grade: str, *, comment: str | None, user: str
) -> GradeOutcome:
    """What :func:`grade_images` would do, read without writing (the CLI's before -> after
    before it asks); a refusal is audited and raised as there."""
    user = operator_name(user)
    request = _checked(engine, user, images, grade, comment)
    with Session(engine) as session:
        rows = _rows(session, request.images, lock=False)
    unknown = [name for name in request.images if name not in rows]
    if unknown:
        _refused(engine, user, request.images, _unknown(unknown))
        raise GradeRefused(_unknown(unknown))
    return request.outcome(rows, user, applied=False)


def check_comment(comment: str | None) -> str | None:
    """``comment`` stripped (None when empty) when it is one bounded line of printable text;
    else :class:`GradeRefused` saying why, without echoing the hostile text itself."""
    if comment is None:
        return None
    try:
        comment.encode("utf-8")
    except UnicodeEncodeError:
        raise GradeRefused("comment refused: it is not valid UTF-8 text") from None
    if len(comment) > MAX_COMMENT:
        raise GradeRefused(
            f"comment refused: {len(comment)} characters, at most {MAX_COMMENT} allowed"
        )
    for position, char in enumerate(comment, 1):
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            shown = printable(char) if category == "Cc" else f"U+{ord(char):04X}"
            raise GradeRefused(
                f"comment refused: character {position} is a control or format character "
                f"({shown}); a comment is one line of printable text"
            )
    return comment.strip() or None


def check_grade(grade: str) -> str:
    """``grade`` as one of A-D (lower case accepted); else :class:`GradeRefused`."""
    wanted = grade.strip().upper() if isinstance(grade, str) else ""
    if wanted not in GRADES:
        shown = printable(grade if isinstance(grade, str) else repr(grade))[:20]
        raise GradeRefused(f"grade {shown!r} refused: expected one of {', '.join(GRADES)}")
    return wanted


@dataclass(frozen=True)
class _Request:
    images: tuple[str, ...]
    grade: str
    comment: str | None

    @classmethod
    def checked(cls, images: Sequence[str], grade: str, comment: str | None) -> _Request:
        """Every part validated; all problems of the names reported at once."""
        if isinstance(images, str):
            raise TypeError("grade_images takes a sequence of image names, not one string")
        if not images:
            raise GradeRefused("no image given: nothing graded")
        bad = []
        for name in images:
            try:
                validate_name(name, "image")
            except InvalidName as exc:
                bad.append(str(exc))
        if bad:
            raise GradeRefused(_some(bad, 5, "; "))
        return cls(tuple(dict.fromkeys(images)), check_grade(grade), check_comment(comment))

    def outcome(self, rows: dict[str, Image], user: str, *, applied: bool) -> GradeOutcome:
        graded = tuple(
            GradedImage(
                image=name,
                before=rows[name].grade,
                before_comment=rows[name].grade_comment,
                proposal=rows[name].grade_proposal,
            )
            for name in self.images
        )
        return GradeOutcome(self.grade, self.comment, user, graded, applied)


def _checked(
    engine: Engine, user: str, images: Sequence[str], grade: str, comment: str | None
) -> _Request:
    """The validated request; a refusal is audited (with the valid names only) and raised."""
    try:
        return _Request.checked(images, grade, comment)
    except GradeRefused as exc:
        _refused(engine, user, _safe_names(images), str(exc))
        raise


def _rows(session: Session, names: Sequence[str], *, lock: bool) -> dict[str, Image]:
    """The images' rows by name; ``lock``: locked for the transaction (MariaDB ``FOR
    UPDATE``; SQLite's write transaction serialises anyway)."""
    found: dict[str, Image] = {}
    for start in range(0, len(names), _NAMES_PER_STATEMENT):
        chunk = names[start : start + _NAMES_PER_STATEMENT]
        stmt = select(Image).where(Image.filename.in_(chunk))
        if lock:
            stmt = stmt.with_for_update()
        found.update((r.filename, r) for r in session.scalars(stmt))
    return found


def _unknown(names: Sequence[str]) -> str:
    return f"unknown image(s), not in dbspica: {_some(names, 20, ', ')}; nothing graded"


def _some(items: Sequence[str], shown: int, sep: str) -> str:
    """The first ``shown`` items joined, and how many more (a message stays readable)."""
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return sep.join(items[:shown]) + more


def _safe_names(images: Sequence[str] | str) -> list[str]:
    """The valid names of a refused request, for its audit row (never a hostile string)."""
    if isinstance(images, str):
        return []
    out = []
    for name in images:
        try:
            out.append(validate_name(name, "image"))
        except InvalidName:
            continue
    return out


def _audit_row(
    user: str,
    targets: Sequence[str],
    result: str,
    *,
    dry_run: bool,
    plan: str,
    detail: dict[str, Any],
) -> OperatorAction:
    return OperatorAction(
        user=user,
        action=ACTION,
        targets=list(targets),
        dry_run=dry_run,
        plan=plan,
        result=result,
        detail=detail,
    )


def _refused(engine: Engine, user: str, targets: Sequence[str], message: str) -> None:
    with Session(engine) as session, session.begin():
        session.add(
            _audit_row(
                user, targets, "refused", dry_run=False, plan="", detail={"message": message}
            )
        )

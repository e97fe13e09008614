"""The ``application`` table as the checks read it, and the one comparison of a binary with it.

The daemon's preflight (``spica check``), ``spica apps`` and the console's nodes panel all
say a binary differs through :func:`checksum_differs` / :func:`differs_message`, against the
row :func:`newest` picks: the latest registered row (with a checksum) of the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from spica_core.db.models import Application


@dataclass(frozen=True)
class ApplicationRow:
    name: str
    version: str
    binary: str
    checksum: str | None
    installed_at: datetime | None
    id: int = 0
    release: str | None = None
    registered_by: str | None = None


def read_applications(engine: Engine) -> list[ApplicationRow]:
    """Every row of the application table."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from spica_core.db.models import Application

    with Session(engine) as session:
        return [row_of(a) for a in session.scalars(select(Application))]


def row_of(a: Application) -> ApplicationRow:
    return ApplicationRow(
        a.name,
        a.version,
        a.binary,
        a.checksum,
        a.installed_at,
        a.id,
        a.release,
        a.registered_by,
    )


def newest(
    rows: list[ApplicationRow], name: str, version: str | None = None
) -> ApplicationRow | None:
    """The registered row of ``name`` (of that ``version`` when given): the most recently
    installed one with a checksum. A row without one (a version a unit ran with that nobody
    registered) is taken only when there is no other, so it never hides the registered
    binary from the checks. The later row wins a tie (two registrations within the clock's
    resolution)."""
    match = [r for r in rows if r.name == name and version in (None, r.version)]
    return max(match, key=_registered, default=None)


def _registered(row: ApplicationRow) -> tuple[bool, float, int]:
    return (bool(row.checksum), row.installed_at.timestamp() if row.installed_at else 0.0, row.id)


def checksum_differs(sha256: str | None, row: ApplicationRow | None) -> bool:
    """Whether a binary's checksum differs from the registered one (a missing binary, or
    one that cannot be read, differs too); nothing registered with a checksum: no."""
    if row is None or not row.checksum:
        return False
    return sha256 is None or sha256.lower() != row.checksum.lower()


def differs_message(name: str, path: str, sha256: str, row: ApplicationRow) -> str:
    """What a check says of a binary whose checksum differs from the table's."""
    return (
        f"{name}: {path} sha256 {short_checksum(sha256)} differs from the application "
        f"table's {short_checksum(row.checksum)} (version {row.version})"
    )


def short_checksum(checksum: str | None) -> str:
    """A checksum as messages show it: its first 12 digits."""
    return f"{checksum[:12]}…" if checksum else "no checksum"

"""The images ``spica auto`` chooses from: one dbspica read of what the rules and the
planner need, kept as plain rows (thousands of them plan in a blink)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from spica_core.db.models import Image, Node, Runid
from spica_core.read_model.images import located


@dataclass(frozen=True)
class AutoImage:
    id: int
    filename: str
    filter: str | None
    ra: float | None
    dec: float | None
    exptime: float | None
    airmass: float | None
    seeing: float | None
    grade: str | None
    qf_status: str
    node: str | None
    partition: str | None
    path: str | None
    runid: str | None
    bytes: int
    checksum: str | None
    phot_c: float | None
    phot_k: float | None
    weight_path: str | None
    flag_path: str | None


def load_images(session: Session) -> list[AutoImage]:
    """Every image of dbspica, by name."""
    stmt = located(
        Image.id,
        Image.filename,
        Image.filter,
        Image.ra,
        Image.dec,
        Image.exptime,
        Image.airmass,
        Image.seeing,
        Image.grade,
        Image.qf_status,
        Node.name,
        Image.partition,
        Image.path,
        Runid.name,
        Image.bytes,
        Image.checksum,
        Image.phot_c,
        Image.phot_k,
        Image.weight_path,
        Image.flag_path,
    ).order_by(Image.filename)
    rows: list[tuple[Any, ...]] = [tuple(row) for row in session.execute(stmt)]
    return [AutoImage(*row) for row in rows]

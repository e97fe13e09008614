"""Ingested records -> dbspica's ``image`` and ``runid`` rows.

Upsert by filename: a file ingested again updates its row (a new location, a new checksum)
and is left alone when nothing changed, so re-ingesting changes nothing, not even
``ingested_at``. QFin results (seeing, grade, qf status) are never touched. A runid's
``images`` and ``bytes`` are recomputed from its image rows in the same transaction, so they
stay right whatever moved between runids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from spica_core.db.models import Image, Node, Runid
from spica_core.db.types import utcnow
from spica_core.errors import NotFound
from spica_core.ingest.record import ImageRecord

Outcome = Literal["added", "updated", "unchanged"]

#: Columns copied from a record. The float columns are DOUBLE on both engines; a float read
#: back within a relative 1e-12 (one decimal round trip) counts as unchanged.
_COPIED = (
    "instrument", "qrunid", "filter", "object", "ra", "dec", "exptime", "date_obs", "mjd_obs",
    "airmass", "gain", "saturate", "phot_c", "phot_k", "extensions", "bytes", "checksum",
    "path", "partition", "repository",
)  # fmt: skip
_FLOAT_REL = 1e-12


@dataclass(frozen=True)
class RunidTotals:
    name: str
    images: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"runid": self.name, "images": self.images, "bytes": self.bytes}


def _same(old: object, new: object) -> bool:
    if isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=_FLOAT_REL, abs_tol=1e-9)
    return old == new


def write_records(
    session: Session, records: Sequence[ImageRecord]
) -> tuple[list[Outcome], list[RunidTotals]]:
    """Upsert ``records`` (filenames unique among them) and recompute their runids' totals.

    Runs in the caller's transaction: all of it is written, or none. Raises NotFound for a
    node dbspica does not know.
    """
    filenames = [r.filename for r in records]
    existing = {
        img.filename: img
        for img in session.scalars(select(Image).where(Image.filename.in_(filenames)))
    }
    runids = _runids(session, {r.runid for r in records})
    nodes = known_nodes(session, {r.node for r in records if r.node is not None})
    touched: set[int] = set()
    outcomes: list[Outcome] = []
    now = utcnow()
    for record in records:
        runid = runids[record.runid]
        node_id = nodes[record.node] if record.node is not None else None
        image = existing.get(record.filename)
        if image is None:
            image = Image(filename=record.filename, raw=True)
            session.add(image)
            outcome: Outcome = "added"
        elif (
            image.runid_id == runid.id
            and image.node_id == node_id
            and all(_same(getattr(image, c), getattr(record, c)) for c in _COPIED)
        ) or _placed_copy(image, record):
            outcomes.append("unchanged")
            continue
        else:
            outcome = "updated"
            if image.runid_id is not None:
                touched.add(image.runid_id)
        for column in _COPIED:
            setattr(image, column, getattr(record, column))
        image.runid_id = runid.id
        image.node_id = node_id
        image.ingested_at = now
        touched.add(runid.id)
        outcomes.append(outcome)
    session.flush()
    return outcomes, _recount(session, touched)


def _placed_copy(image: Image, record: ImageRecord) -> bool:
    """The repository's copy of an image DataTransfer already placed on a node, byte for
    byte: a copy leaves the source in place, and reading it again must not move the image
    back to the repository. A new version of the file (another checksum) is news."""
    return (
        record.repository is not None
        and image.repository is None
        and image.node_id is not None
        and image.checksum is not None
        and image.checksum == record.checksum
    )


def _runids(session: Session, names: set[str]) -> dict[str, Runid]:
    found = {r.name: r for r in session.scalars(select(Runid).where(Runid.name.in_(names)))}
    for name in sorted(names - found.keys()):
        found[name] = Runid(name=name, images=0, bytes=0)
        session.add(found[name])
    session.flush()
    return found


def known_nodes(session: Session, names: set[str]) -> dict[str, int]:
    """The dbspica ids of nodes ``names``; NotFound for one dbspica does not know (its rows
    come from ``spica db init``)."""
    rows = session.execute(select(Node.name, Node.id).where(Node.name.in_(names))).all()
    found = {name: node_id for name, node_id in rows}
    for name in sorted(names - found.keys()):
        raise NotFound("node", name)
    return found


def _recount(session: Session, runid_ids: set[int]) -> list[RunidTotals]:
    """Totals of the runids from their image rows (correlated subqueries: one statement)."""
    if not runid_ids:
        return []
    count = select(func.count(Image.id)).where(Image.runid_id == Runid.id).scalar_subquery()
    total = (
        select(func.coalesce(func.sum(Image.bytes), 0))
        .where(Image.runid_id == Runid.id)
        .scalar_subquery()
    )
    session.execute(
        update(Runid)
        .where(Runid.id.in_(runid_ids))
        .values(images=count, bytes=total)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(
        select(Runid.name, Runid.images, Runid.bytes)
        .where(Runid.id.in_(runid_ids))
        .order_by(Runid.name)
    ).all()
    return [RunidTotals(name, images, int(size)) for name, images, size in rows]

"""The ``transfer`` rows of a copy run: claimed, kept, and finished by compare-and-set.

A runner owns a row from its claim (``running``, ``attempts`` + 1) until it finishes it. Each
write it makes is conditional on the row still being ``running`` with the ``updated_at`` it
wrote last (its *stamp*): a row another runner took back — because this one stopped beating
and looked dead — is never finished by both. Rows a killed runner left ``running`` are taken
back once their ``updated_at`` is older than the staleness bound; a live runner beats every
few seconds (:func:`touch`), far inside it.

Functions here are synchronous (SQLAlchemy) and cheap; the runner calls them through
``asyncio.to_thread`` so the SSH event loop never waits on dbspica.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, and_, or_, select, update
from sqlalchemy.orm import Session

from spica_core.db.keyed import through_key
from spica_core.db.models import Image, Node, Runid, Transfer
from spica_core.db.types import affected_rows, utcnow

PLANNED = "planned"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
#: Stopped midway (the runner was stopped, or died and its row was taken back): its partial
#: file stays on the node to be resumed.
INTERRUPTED = "interrupted"
#: What ``spica transfer run`` takes up: the automatic ``watch`` leaves failed rows to
#: operators.
RUN_STATES = (PLANNED, INTERRUPTED, FAILED)
WATCH_STATES = (PLANNED, INTERRUPTED)
ERROR_CHARS = 2000


@dataclass(frozen=True)
class Claimed:
    """A claimed row as plain values; ``stamp`` is the ``updated_at`` this runner wrote."""

    id: int
    filename: str
    runid: str | None
    filter: str | None
    source: str
    source_node: str | None
    node: str
    partition: str | None
    path: str | None
    bytes: int
    checksum: str | None
    attempts: int
    image_id: int | None
    stamp: datetime
    #: Whether the row was taken back from a runner that stopped beating.
    taken_back: bool


def runnable(states: tuple[str, ...], stale_before: datetime) -> ColumnElement[bool]:
    """Rows in ``states``, or ``running`` without a heartbeat since ``stale_before``."""
    return or_(
        Transfer.state.in_(states),
        and_(Transfer.state == RUNNING, Transfer.updated_at < stale_before),
    )


def runnable_ids(
    engine: Engine,
    *,
    runid: str | None,
    filter: str | None,
    states: tuple[str, ...],
    stale_before: datetime,
) -> list[tuple[int, str]]:
    """Rows a run may claim, in plan order (id), with their destination node."""
    query = (
        select(Transfer.id, Transfer.destination_node)
        .where(runnable(states, stale_before))
        .order_by(Transfer.id)
    )
    if runid is not None:
        query = query.where(Transfer.runid == runid)
    if filter is not None:
        query = query.where(Transfer.filter == filter)
    with Session(engine) as session:
        return [(row_id, node) for row_id, node in session.execute(query)]


def has_rows(engine: Engine, runid: str, filter: str | None) -> bool:
    query = select(Transfer.id).where(Transfer.runid == runid).limit(1)
    if filter is not None:
        query = query.where(Transfer.filter == filter)
    with Session(engine) as session:
        return session.scalar(query) is not None


def _stamp(after: datetime | None = None) -> datetime:
    """Now, strictly after ``after``: every write of a row changes its stamp."""
    now = utcnow()
    if after is not None and now <= after:
        now = after + timedelta(microseconds=1)
    return now


def claim(
    engine: Engine, row_id: int, *, states: tuple[str, ...], stale_before: datetime
) -> Claimed | None:
    """Take the row (``running``, attempts + 1), or None when another runner has it or it
    is no longer runnable. Exclusive: one conditional UPDATE."""
    now = _stamp()
    with Session(engine) as session, session.begin():
        before = session.get(Transfer, row_id)
        if before is None:
            return None
        taken_back = before.state == RUNNING
        done = session.execute(
            through_key(update(Transfer), "id")
            .where(Transfer.id == row_id, runnable(states, stale_before))
            .values(state=RUNNING, attempts=Transfer.attempts + 1, started_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if affected_rows(done) != 1:
            return None
        session.expire_all()
        row = session.get(Transfer, row_id)
        assert row is not None
        return Claimed(
            id=row.id,
            filename=row.filename,
            runid=row.runid,
            filter=row.filter,
            source=row.source,
            source_node=row.source_node,
            node=row.destination_node,
            partition=row.destination_partition,
            path=row.destination_path,
            bytes=row.bytes,
            checksum=row.checksum,
            attempts=row.attempts,
            image_id=row.image_id,
            stamp=now,
            taken_back=taken_back,
        )


def _cas(session: Session, c: Claimed, now: datetime, **values: object) -> bool:
    done = session.execute(
        through_key(update(Transfer), "id")
        .where(Transfer.id == c.id, Transfer.state == RUNNING, Transfer.updated_at == c.stamp)
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return affected_rows(done) == 1


def touch(engine: Engine, claims: list[Claimed]) -> tuple[list[Claimed], list[int]]:
    """The heartbeat: a new stamp on each row still ours; ``(kept, lost ids)``."""
    kept: list[Claimed] = []
    lost: list[int] = []
    with Session(engine) as session, session.begin():
        for c in claims:
            now = _stamp(c.stamp)
            if _cas(session, c, now):
                kept.append(_restamp(c, now))
            else:
                lost.append(c.id)
    return kept, lost


def _restamp(c: Claimed, stamp: datetime, **changes: object) -> Claimed:
    from dataclasses import replace

    return replace(c, stamp=stamp, **changes)  # type: ignore[arg-type]


def retry(engine: Engine, c: Claimed, error: str) -> Claimed | None:
    """Another attempt of a row still ours (attempts + 1, the failure kept in ``error``)."""
    now = _stamp(c.stamp)
    with Session(engine) as session, session.begin():
        if not _cas(session, c, now, attempts=Transfer.attempts + 1, error=error[:ERROR_CHARS]):
            return None
    return _restamp(c, now, attempts=c.attempts + 1)


def note_checksum(engine: Engine, c: Claimed, checksum: str, size: int) -> Claimed | None:
    """Record the source's checksum and size as read by the copy."""
    now = _stamp(c.stamp)
    with Session(engine) as session, session.begin():
        if not _cas(session, c, now, checksum=checksum, bytes=size):
            return None
    return _restamp(c, now, checksum=checksum, bytes=size)


def stop(engine: Engine, c: Claimed, state: str, error: str) -> bool:
    """Finish a row ``failed`` or ``interrupted``, with its error; False if no longer ours."""
    now = _stamp(c.stamp)
    finished = now if state == FAILED else None
    with Session(engine) as session, session.begin():
        return _cas(session, c, now, state=state, error=error[:ERROR_CHARS], finished_at=finished)


def done(
    engine: Engine,
    c: Claimed,
    *,
    checksum: str,
    node_checksum: str,
    size: int,
    node_path: str,
    last_error: str | None,
) -> bool:
    """``done`` and the image on its node, in one transaction; False (nothing written) when
    the row is no longer ours. ``last_error``: the failure a retry got past, kept."""
    now = _stamp(c.stamp)
    with Session(engine) as session, session.begin():
        if not _cas(
            session,
            c,
            now,
            state=DONE,
            checksum=checksum,
            node_checksum=node_checksum,
            bytes=size,
            finished_at=now,
            error=last_error[:ERROR_CHARS] if last_error else None,
        ):
            return False  # nothing written: the transaction holds no change
        image = _image_of(session, c)
        session.execute(
            update(Transfer)
            .where(Transfer.id == c.id)
            .values(image_id=image.id)
            .execution_options(synchronize_session=False)
        )
        image.node_id = session.scalar(select(Node.id).where(Node.name == c.node))
        image.partition = c.partition
        image.path = node_path
        image.repository = None
        image.bytes = size
        image.checksum = checksum
        if image.ingested_at is None:
            image.ingested_at = now
    return True


def _image_of(session: Session, c: Claimed) -> Image:
    """The transferred file's image row: by id, else by file name, else a new one (its
    header metadata is ``spica ingest``'s to read)."""
    image = session.get(Image, c.image_id) if c.image_id is not None else None
    if image is None:
        image = session.scalar(select(Image).where(Image.filename == c.filename))
    if image is None:
        runid_id = None
        if c.runid is not None:
            runid_id = session.scalar(select(Runid.id).where(Runid.name == c.runid))
        image = Image(filename=c.filename, filter=c.filter, runid_id=runid_id)
        session.add(image)
        session.flush()
    return image

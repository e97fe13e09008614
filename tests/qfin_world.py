"""Images and QFin units as ingestion, DataTransfer, ``spica qfin`` and its daemon leave them,
written straight to dbspica: the QFin screen's and read model's tests count the figures they
expect from :func:`images` themselves, independently of the SQL under test."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Image, Node, Problem, Runid, Stack, StackFile

RUNIDS = ("04BF28", "04BF29", "05AQ01")
FILTERS = ("r.MP9601", "i.MP9701", "z.MP9801")
OBJECTS = ("Tau03B-1", "D3", "W1+2+0")
GRADES = (None, "A", "B", None, "D")
#: (qf_status, state of its QFin unit or None) in turn: the states an image goes through.
QF_STATES = (
    ("done", "completed"),
    ("done", "completed"),
    ("planned", "running"),
    ("planned", "pending"),
    ("planned", "planned"),
    ("failed", "failed"),
    ("new", None),
    ("done", "completed"),
)
NIGHT = datetime(2004, 10, 12, 23, 30, tzinfo=UTC)


@dataclass(frozen=True)
class SeedImage:
    name: str
    runid: str
    filter: str
    object: str
    exptime: float
    date_obs: datetime
    #: None: waiting in the repository.
    node: str | None
    partition: str | None
    qf_status: str
    unit_state: str | None
    grade: str | None
    seeing: float | None
    airmass: float
    background: float | None
    #: An open problem row names its QFin unit (and one resolved problem for every image
    #: with a unit, which never counts).
    open_problem: bool = False

    @property
    def unit(self) -> str | None:
        return None if self.unit_state is None else f"{self.name}_qfin_T0003"


def images(nodes: tuple[str, ...], count: int = 40, first: int = 811000) -> list[SeedImage]:
    """``count`` images over three runids, with every QF state, placed on ``nodes`` (and a
    few waiting in the repository), measured ones with figures that grow with their index."""
    out = []
    for i in range(count):
        qf, unit = QF_STATES[i % len(QF_STATES)]
        waiting = i % 11 == 10
        if waiting:
            qf, unit = "new", None
        measured = qf == "done"
        out.append(
            SeedImage(
                name=f"{first + i}p",
                runid=RUNIDS[i % 3],
                filter=FILTERS[(i // 3) % 3],
                object=OBJECTS[(i // 2) % 3],
                exptime=(60.0, 600.0)[i % 2],
                date_obs=NIGHT + timedelta(days=i % 2, minutes=i),
                node=None if waiting else nodes[i % len(nodes)],
                partition=None if waiting else ("raid1", "raid2")[(i // 2) % 2],
                qf_status=qf,
                unit_state=unit,
                grade=GRADES[i % len(GRADES)] if measured else None,
                seeing=0.5 + 0.025 * i if measured else None,
                airmass=1.0 + 0.01 * i,
                background=1000.0 + 10 * i if measured else None,
                open_problem=unit == "completed" and i % 3 == 0,
            )
        )
    return out


def seed(engine: Engine, seeded: Iterable[SeedImage]) -> None:
    """Runids, images, their QFin units (stack + stack_file) and problems, in one
    transaction; the nodes must be in dbspica already."""
    with Session(engine) as s, s.begin():
        node_ids = {n.name: n.id for n in s.scalars(select(Node))}
        runids: dict[str, Runid] = {r.name: r for r in s.scalars(select(Runid))}
        for im in seeded:
            run = runids.get(im.runid)
            if run is None:
                run = runids[im.runid] = Runid(name=im.runid)
                s.add(run)
                s.flush()
            image = Image(
                filename=im.name,
                runid_id=run.id,
                filter=im.filter,
                object=im.object,
                exptime=im.exptime,
                date_obs=im.date_obs,
                airmass=im.airmass,
                node_id=None if im.node is None else node_ids[im.node],
                partition=im.partition,
                path=None if im.node is None else f"/{im.partition}/{im.runid}/{im.name}.fits.fz",
                repository="incoming" if im.node is None else None,
                qf_status=im.qf_status,
                grade=im.grade,
                seeing=im.seeing,
                background=im.background,
                ingested_at=im.date_obs,
            )
            s.add(image)
            s.flush()
            if im.unit is None:
                continue
            stack = s.scalars(select(Stack).where(Stack.name == im.unit)).one_or_none()
            if stack is None:  # the caller may have made it (with its files on the node)
                stack = Stack(name=im.unit, lines=3)
                s.add(stack)
            stack.step = "qfin"
            stack.state = im.unit_state or "planned"
            stack.runid = im.runid
            stack.filter = im.filter
            stack.release = "T0003"
            stack.node_id = None if im.node is None else node_ids[im.node]
            if im.unit_state == "running":
                stack.started_at = im.date_obs
            s.flush()
            s.add(StackFile(stack_id=stack.id, image_id=image.id, role="qfin"))
            s.add(
                Problem(kind="software", stack=im.unit, runid=im.runid, node=im.node,
                        message=f"{im.name}: an old trouble", resolved=True)
            )  # fmt: skip
            if im.open_problem:
                s.add(
                    Problem(kind="software", stack=im.unit, runid=im.runid, node=im.node,
                            message=f"{im.name}: CCD 3 unusable")
                )  # fmt: skip

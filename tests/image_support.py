"""A small dbspica of measured images for the grading and ``spica images`` tests."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Image, Node, OperatorAction, Runid

#: name, runid, filter, object, exptime, airmass, seeing, background, qf, proposal, grade, node
IMAGES = [
    (
        "811001p",
        "05BL02",
        "r",
        "Pre-W1_159",
        180.06,
        1.165,
        0.91,
        1012.5,
        "done",
        "A",
        None,
        "mix4",
    ),
    ("810998p", "05BL02", "r", "Pre-W1_159", 180.1, 1.153, 0.88, 998.0, "done", "A", "A", "mix4"),
    ("810150p", "05BL02", "i", "Pre-W1_159", 180.07, 1.185, 1.25, 1540.0, "done", "C", "C", "mix3"),
    (
        "807009p",
        "05BL02",
        "r",
        "Pre-W1_129",
        180.06,
        1.392,
        0.83,
        870.0,
        "planned",
        None,
        None,
        "mix4",
    ),
    (
        "806860p",
        "05BL02",
        "r",
        "w1.-1-0",
        500.08,
        1.205,
        0.68,
        2400.0,
        "failed",
        None,
        None,
        "mix3",
    ),
    ("775333p", "04BF28", "z", "Tau03B-1", 60.0, 1.05, 1.4, 3100.0, "done", "D", "B", "plat"),
    ("775334p", "04BF28", "z", "Tau03B-1", 60.0, 1.10, None, None, "new", None, None, None),
]


def seed_images(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        runids = {r: Runid(name=r) for r in sorted({row[1] for row in IMAGES})}
        nodes = {
            n: Node(name=n, host=f"{n}.example.org", root=f"/data/{n}")
            for n in sorted({row[11] for row in IMAGES if row[11]})
        }
        s.add_all([*runids.values(), *nodes.values()])
        s.flush()
        for name, runid, flt, obj, exptime, airmass, seeing, bkg, qf, prop, grade, node in IMAGES:
            failed = "psfex: no PSF on /data/mix3/raid1/806860p CCD 3" if qf == "failed" else None
            s.add(
                Image(
                    filename=name,
                    runid_id=runids[runid].id,
                    filter=flt,
                    object=obj,
                    exptime=exptime,
                    airmass=airmass,
                    date_obs=datetime(2005, 9, 9, tzinfo=UTC),
                    seeing=seeing,
                    background=bkg,
                    sources=None if seeing is None else 1200,
                    qf_status=qf,
                    qf_error=failed,
                    grade_proposal=prop,
                    grade_reasons=["Poor seeing (>1.2): 1.25 arcsec"] if prop == "C" else [],
                    grade=grade,
                    grade_comment="Poor seeing (>1.2)" if grade == "C" else None,
                    graded_by="mbertin" if grade else None,
                    node_id=nodes[node].id if node else None,
                    partition="raid1" if node else None,
                )
            )


def grades(engine: Engine) -> dict[str, tuple[str | None, str | None, str | None]]:
    """Each image's grade, comment and grader: what a refused request must leave as it was."""
    with Session(engine) as s:
        return {
            i.filename: (i.grade, i.grade_comment, i.graded_by) for i in s.scalars(select(Image))
        }


def audit(engine: Engine) -> list[OperatorAction]:
    with Session(engine) as s:
        return list(s.scalars(select(OperatorAction).order_by(OperatorAction.id)))

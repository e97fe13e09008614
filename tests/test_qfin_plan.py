"""``spica qfin``: planning QFin units, idempotent, dry-run, launch, JSON, and ``remove``.

Real parts: the ``spica`` command line in a subprocess, a demo node (units staged through
its agent's code), dbspica on SQLite and MariaDB.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Image, OperatorAction, Stack, StackFile
from spica_core.demo.cluster import DemoCluster
from spica_core.qfin.commands import QfinUnitPaths, qfin_commands
from spica_core.resources import astromatic_dir
from tests.conftest import invoke_spica
from tests.qfin_units_support import NODE, demo_cluster, place_image

RELEASE = "T0001"  # the demo's release


@pytest.fixture
def demo(tmp_path: Path, db_url: str):
    yield from demo_cluster(tmp_path, db_url)


def qfin(demo: DemoCluster, *args: str):  # type: ignore[no-untyped-def]
    return invoke_spica("--config", str(demo.config_path), "qfin", *args)


def qfin_json(demo: DemoCluster, *args: str) -> dict:  # type: ignore[type-arg]
    done = qfin(demo, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def image_states(demo: DemoCluster) -> dict[str, str]:
    engine = make_engine(load_config(demo.config_path).db)
    try:
        with Session(engine) as s:
            return {n: q for n, q in s.execute(select(Image.filename, Image.qf_status))}
    finally:
        engine.dispose()


def stacks(demo: DemoCluster) -> dict[str, tuple[str, str | None, str | None, str | None]]:
    engine = make_engine(load_config(demo.config_path).db)
    try:
        with Session(engine) as s:
            rows = s.execute(
                select(Stack.name, Stack.step, Stack.runid, Stack.filter, Stack.release)
            )
            return {name: (step, runid, filt, rel) for name, step, runid, filt, rel in rows}  # type: ignore[misc]
    finally:
        engine.dispose()


def test_plan_dry_run_then_idempotent_then_launch_and_remove(demo: DemoCluster) -> None:
    root = demo.node_root(NODE)
    first = place_image(demo, "811001p", filename="811001p.fits.fz", filter="g")
    place_image(demo, "811002p", partition="raid2")
    place_image(demo, "811003p", partition=None)  # still in the repository

    planned = qfin_json(demo, "--dry-run")
    assert set(planned) == {"release", "dry_run", "launch", "units", "skipped", "not_launched"}
    assert planned["release"] == RELEASE and planned["dry_run"] is True
    assert [u["unit"] for u in planned["units"]] == ["811001p_qfin_T0001", "811002p_qfin_T0001"]
    unit = planned["units"][0]
    assert set(unit) == {
        "unit", "image", "node", "partition", "image_path", "workdir", "runid", "filter",
        "commands", "state", "error",
    }  # fmt: skip
    workdir = f"{root}/raid1/qfin/{RELEASE}/811001p"
    assert unit | {"commands": None} == {
        "unit": "811001p_qfin_T0001",
        "image": "811001p",
        "node": NODE,
        "partition": "raid1",
        "image_path": str(first),
        "workdir": workdir,
        "runid": "03AL01",
        "filter": "g",
        "commands": None,
        "state": "new",
        "error": None,
    }
    expected = qfin_commands(
        QfinUnitPaths(image="811001p", image_path=str(first), workdir=workdir),
        release=RELEASE,
        config_dir=str(astromatic_dir()),
    )
    assert unit["commands"] == [shlex.join(argv) for argv in expected]
    assert planned["skipped"] == [
        {
            "image": "811003p",
            "reason": "not on a node (still in repository incoming): transfer it first",
            "unit": None,
        }
    ]
    # A dry run writes nothing: no row, no file on the node, images still new.
    assert stacks(demo) == {}
    assert not (root / "stacks" / "811001p_qfin_T0001").exists()
    assert set(image_states(demo).values()) == {"new"}

    written = qfin_json(demo)
    assert written["dry_run"] is False
    assert [(u["unit"], u["state"]) for u in written["units"]] == [
        ("811001p_qfin_T0001", "planned"),
        ("811002p_qfin_T0001", "planned"),
    ]
    assert stacks(demo) == {
        "811001p_qfin_T0001": ("qfin", "03AL01", "g", RELEASE),
        "811002p_qfin_T0001": ("qfin", "03AL01", "r", RELEASE),
    }
    assert image_states(demo) == {"811001p": "planned", "811002p": "planned", "811003p": "new"}
    staged = root / "stacks" / "811001p_qfin_T0001"
    assert (staged / "commands.sh").read_text() == "".join(f"{c}\n" for c in unit["commands"])
    assert json.loads((staged / "unit.json").read_text()) == {"step": "qfin", "partition": "raid1"}
    assert not (root / "queue" / "811001p_qfin_T0001.spica").exists()  # planned, not launched
    engine = make_engine(load_config(demo.config_path).db)
    with Session(engine) as s:
        links = s.execute(
            select(Stack.name, Image.filename, StackFile.role)
            .join(Stack, Stack.id == StackFile.stack_id)
            .join(Image, Image.id == StackFile.image_id)
        ).all()
    assert sorted(tuple(r) for r in links) == [
        ("811001p_qfin_T0001", "811001p", "qfin"),
        ("811002p_qfin_T0001", "811002p", "qfin"),
    ]

    # Again: nothing new, each image skipped with its reason.
    again = qfin(demo, "--json")
    assert again.returncode == 0, again.stderr
    shown = json.loads(again.stdout)
    assert shown["units"] == []
    assert {s["image"]: s["reason"] for s in shown["skipped"]} == {
        "811001p": "has its QFin unit 811001p_qfin_T0001 (planned)",
        "811002p": "has its QFin unit 811002p_qfin_T0001 (planned)",
        "811003p": "not on a node (still in repository incoming): transfer it first",
    }
    text = qfin(demo)
    assert text.returncode == 0
    assert "811001p: skipped: has its QFin unit 811001p_qfin_T0001 (planned)" in text.stderr
    assert "planned 0 QFin unit(s), 3 image(s) skipped" in text.stderr

    # A new image: only it is planned, and launched.
    place_image(demo, "811004p", runid="03AL02")
    launched = qfin_json(demo, "--runid", "03AL02", "--launch")
    assert [(u["unit"], u["state"]) for u in launched["units"]] == [
        ("811004p_qfin_T0001", "pending")
    ]
    assert launched["skipped"] == [] and launched["not_launched"] == []
    assert (root / "queue" / "811004p_qfin_T0001.spica").exists()
    with Session(engine) as s:
        audit = s.execute(
            select(OperatorAction.action, OperatorAction.targets, OperatorAction.result).where(
                OperatorAction.action == "launch"
            )
        ).all()
    assert [(a, t, r) for a, t, r in audit] == [("launch", ["811004p_qfin_T0001"], "applied")]

    # Removing a unit puts its (unmeasured) image back to new; it is planned again.
    removed = invoke_spica(
        "--config", str(demo.config_path), "remove", "811002p_qfin_T0001", "--yes"
    )
    assert removed.returncode == 0, removed.stderr
    assert image_states(demo)["811002p"] == "new"
    replanned = qfin_json(demo, "--image", "811002p")
    assert [u["unit"] for u in replanned["units"]] == ["811002p_qfin_T0001"]
    engine.dispose()


def test_unknown_images_and_filters(demo: DemoCluster) -> None:
    place_image(demo, "811001p")
    unknown = qfin(demo, "--image", "811001p", "--image", "999999p")
    assert unknown.returncode == 1
    assert "no image named 999999p in dbspica" in unknown.stderr
    assert stacks(demo) == {}  # nothing planned when one name is unknown

    bad = qfin(demo, "--image", "../etc")
    assert bad.returncode == 2 and "image" in bad.stderr

    node = qfin(demo, "--node", "pix9")
    assert node.returncode == 2 and "pix9" in node.stderr

    other = qfin_json(demo, "--runid", "03AQ97")
    assert other["units"] == [] and other["skipped"] == []

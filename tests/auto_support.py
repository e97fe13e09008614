"""What the ``spica auto`` tests share: a small tile grid and release in a configuration,
and graded, QFin-measured image rows placed on nodes."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.checksum import file_checksum
from spica_core.config import SpicaConfig, load_config
from spica_core.db.models import Image, Node, Runid
from spica_core.db.registry import register_nodes
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster

RELEASE = "T0003"
#: The two demo nodes.
A, B = "mix1", "mix2"
#: Tiles of 0.5 deg (1800 px of 1"), rows 0.5 deg apart, exposures of 0.2 deg.
GRID: dict[str, Any] = {
    "name": "small",
    "prefix": "CFHTLS",
    "survey": "W",
    "tile_pixels": 1800,
    "pixel_scale": 1.0,
    "row_step": 0.5,
    "exposure_size": 0.2,
    "fields": [{"name": "W1", "ra_min": 10.0, "ra_max": 11.0, "dec_min": -1.0, "dec_max": -0.5}],
}
RULES: dict[str, Any] = {
    "grades": ["A", "B"],
    "min_exptime": 60.0,
    "max_seeing": 1.1,
    "max_seeing_filter": {"u": 1.4},
}
REFCAT = "ra,dec,mag\n10.0,-1.0,18.0\n10.5,-0.5,18.5\n11.0,-1.0,19.0\n"


def add_release(
    settings: dict[str, Any], base: Path, *, rules: dict[str, Any] | None = None, **release: Any
) -> dict[str, Any]:
    """``settings`` with the small grid and release T0003 (a CSV reference catalogue)."""
    refcat = base / "refcat.csv"
    if not refcat.exists():
        refcat.write_text(REFCAT)
    settings["grids"] = [GRID]
    entry = {"name": RELEASE, "grid": "small", "mode": "stack",
             "reference_catalogue": str(refcat), "rules": rules or RULES, **release}  # fmt: skip
    settings["releases"] = [entry]
    return settings


def edit_config(path: Path, edit: Any) -> None:
    settings = tomllib.loads(path.read_text())
    edit(settings)
    path.write_text(tomli_w.dumps(settings))


def place(
    engine: Engine,
    config: Any,
    name: str,
    node: str,
    *,
    ra: float,
    dec: float,
    partition: str = "raid1",
    runid: str = "03AL01",
    filter: str = "r.MP9601",
    path: Path | str | None = None,
    **columns: Any,
) -> None:
    """An image as ingestion, a transfer, QFin and grading leave it (overridable)."""
    register_nodes(engine, config)
    root = config.node(node).root.rstrip("/")
    values: dict[str, Any] = {
        "exptime": 300.0, "seeing": 0.8, "airmass": 1.2, "grade": "A", "qf_status": "done",
        "bytes": 1000, "phot_c": 30.0, "phot_k": 0.1,
    }  # fmt: skip
    values.update(columns)
    with Session(engine) as s, s.begin():
        run = s.scalars(select(Runid).where(Runid.name == runid)).one_or_none()
        if run is None:
            run = Runid(name=runid)
            s.add(run)
            s.flush()
        s.add(
            Image(
                filename=name,
                runid_id=run.id,
                filter=filter,
                ra=ra,
                dec=dec,
                node_id=s.scalar(select(Node.id).where(Node.name == node)),
                partition=partition,
                path=str(path) if path else f"{root}/{partition}/{runid}/{name}.fits.fz",
                **values,
            )
        )


def auto_demo(base: Path, db_url: str) -> Iterator[DemoCluster]:
    """Body of a fixture: two demo nodes, dbspica at ``db_url``, the small grid and T0003."""
    cluster = DemoCluster(base / "cluster")
    cluster.up(2)
    try:

        def edit(settings: dict[str, Any]) -> None:
            settings["db"]["url"] = db_url
            add_release(settings, base)

        edit_config(cluster.config_path, edit)
        prepare_database(load_config(cluster.config_path), create=True)
        yield cluster
    finally:
        cluster.down()


def put(
    demo: DemoCluster, config: SpicaConfig, engine: Engine, name: str, node: str, size: int,
    *, ra: float, **columns: Any,
) -> Path:  # fmt: skip
    """An exposure's file of ``size`` random bytes on ``node`` (all a copy looks at) and
    its image row (checksum as ingested, unless given), at Dec -1."""
    path = demo.node_root(node) / "raid1" / "03AL01" / f"{name}.fits.fz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    columns.setdefault("checksum", file_checksum(path)[0])
    place(engine, config, name, node, ra=ra, dec=-1.0, path=path, bytes=size, **columns)
    return path

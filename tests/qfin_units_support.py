"""What the QFin unit tests share: a demo node on SQLite or MariaDB, images placed on it."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Image, Node, Runid
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster

NODE = "mix1"


def demo_cluster(base: Path, db_url: str, **daemon: Any) -> Iterator[DemoCluster]:
    """Body of a fixture: one demo node (passive until a test starts its daemon), dbspica
    at ``db_url`` migrated, ``[daemon]`` settings overridden by ``daemon``."""
    cluster = DemoCluster(base / "cluster")
    cluster.up(1)
    try:
        settings = tomllib.loads(cluster.config_path.read_text())
        settings["db"]["url"] = db_url
        settings.setdefault("daemon", {}).update(daemon)
        cluster.config_path.write_text(tomli_w.dumps(settings))
        prepare_database(load_config(cluster.config_path), create=True)
        yield cluster
    finally:
        cluster.down()


def place_image(
    demo: DemoCluster,
    name: str,
    *,
    runid: str = "03AL01",
    partition: str | None = "raid1",
    filename: str | None = None,
    **columns: Any,
) -> Path | None:
    """An image row as ingestion and a finished transfer leave it: on ``partition`` of the
    node at ``<root>/<partition>/<runid>/<file>`` (None: still in the repository). The path
    on the node (not created here)."""
    config = load_config(demo.config_path)
    engine = make_engine(config.db)
    root = demo.node_root(NODE)
    path = root / partition / runid / (filename or f"{name}.fits") if partition else None
    try:
        with Session(engine) as s, s.begin():
            run = s.scalars(select(Runid).where(Runid.name == runid)).one_or_none()
            if run is None:
                run = Runid(name=runid)
                s.add(run)
                s.flush()
            node_id = s.scalar(select(Node.id).where(Node.name == NODE)) if partition else None
            s.add(
                Image(
                    filename=name,
                    runid_id=run.id,
                    filter=columns.pop("filter", "r"),
                    node_id=node_id,
                    partition=partition,
                    path=str(path) if path else None,
                    repository=None if partition else "incoming",
                    exptime=columns.pop("exptime", 60.0),
                    extensions=columns.pop("extensions", None),
                    **columns,
                )
            )
    finally:
        engine.dispose()
    return path

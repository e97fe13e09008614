"""What the QFin unit tests share: a demo node on SQLite or MariaDB, images placed on it."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import replace
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


def demo_cluster(
    base: Path, db_url: str, release: dict[str, Any] | None = None, **daemon: Any
) -> Iterator[DemoCluster]:
    """Body of a fixture: one demo node (passive until a test starts its daemon), dbspica
    at ``db_url`` migrated, ``[release]`` and ``[daemon]`` settings overridden."""
    cluster = DemoCluster(base / "cluster")
    cluster.up(1)
    try:
        settings = tomllib.loads(cluster.config_path.read_text())
        settings["db"]["url"] = db_url
        settings.setdefault("daemon", {}).update(daemon)
        settings.setdefault("release", {}).update(release or {})
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


# --------------------------------------------------------------------------- exposures

#: CCD shape of the rendered exposures: cut-outs of MegaCam's CCDs at their native scale.
CCD_SHAPE = (1024, 1024)


def exposure_spec(name: str, *, fwhm: float = 0.9, ccds: int = 2, runid: str = "03AL01") -> Any:
    """A MegaCam-like exposure of the synthetic sky: ``ccds`` CCDs of :data:`CCD_SHAPE`
    native pixels, seeing ``fwhm`` arcsec."""
    from datetime import UTC, datetime

    from spica_core.synth.layout import NATIVE_SCALE, ExposureSpec

    return ExposureSpec(
        filename=name, runid=runid, qrunid=runid, filter="r.MP9601", object="w1.+0+0",
        ra_deg=34.5, dec_deg=-7.0, exptime=300.0, start=datetime(2003, 2, 3, 8, tzinfo=UTC),
        airmass=1.2, ccd_shape=CCD_SHAPE, ccds=ccds, pixel_scale=NATIVE_SCALE, fwhm=fwhm,
    )  # fmt: skip


def write_sky(spec: Any, directory: Path, container: Any = "fits.fz") -> Path:
    """The exposure drawn from the synthetic sky, its truth table kept out of the way."""
    from spica_core.synth.truth import write_sky_exposure

    return write_sky_exposure(spec, directory, container, truth_dir=directory / ".truth")


def write_zero_ccd(spec: Any, directory: Path) -> Path:
    """The exposure with its second CCD all zeros (a dead amplifier, a failed readout)."""
    return write_sky(replace(spec, dead_ccds=frozenset({1})), directory, "fits")


def write_without_wcs(spec: Any, directory: Path) -> Path:
    """The exposure whose second CCD lost its celestial WCS (no CTYPE cards)."""
    broken = replace(spec, ccd_overrides={1: {"CTYPE1": None, "CTYPE2": None}})
    return write_sky(broken, directory, "fits")

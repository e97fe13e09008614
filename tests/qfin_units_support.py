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


# --------------------------------------------------------------------------- pixels

#: CCD shape of the rendered exposures: MegaCam's aspect, 0.374 arcsec per pixel.
STAR_SHAPE = (2306, 1024)
#: Moffat beta of the rendered PSF.
BETA = 3.0


def exposure_spec(name: str, *, ccds: int = 2, runid: str = "03AL01") -> Any:
    """A MegaCam-like exposure of ``ccds`` CCDs of :data:`STAR_SHAPE` pixels."""
    from datetime import UTC, datetime

    from spica_core.synth.layout import ExposureSpec

    return ExposureSpec(
        filename=name, runid=runid, qrunid=runid, filter="r.MP9601", object="w1.+0+0",
        ra_deg=34.5, dec_deg=-7.0, exptime=300.0, start=datetime(2003, 2, 3, 8, tzinfo=UTC),
        airmass=1.2, ccd_shape=STAR_SHAPE, ccds=ccds, saturate=65535.0,
    )  # fmt: skip


def star_pixels(fwhm_arcsec: float, stars: int = 250) -> Any:
    """A PixelSource: sky, Moffat stars of ``fwhm_arcsec`` over a range of fluxes, Poisson
    and read noise; seeded by the exposure and the CCD."""
    import zlib

    import numpy as np

    from spica_core.synth.layout import ccd_geometry

    def pixels(spec: Any, index: int) -> Any:
        rng = np.random.default_rng(zlib.crc32(f"{spec.filename}/{index}/stars".encode()))
        ny, nx = spec.ccd_shape
        scale = ccd_geometry(index, spec.ccd_shape).scale_x
        fwhm = fwhm_arcsec / scale
        alpha = fwhm / (2 * np.sqrt(2 ** (1 / BETA) - 1))
        image = np.full((ny, nx), 800.0)
        half = int(np.ceil(6 * fwhm))
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
        for _ in range(stars):
            x0, y0 = rng.uniform(half, nx - half - 1), rng.uniform(half, ny - half - 1)
            flux = 10 ** rng.uniform(3.3, 5.6)
            ix, iy = int(x0), int(y0)
            r2 = (xx - (x0 - ix)) ** 2 + (yy - (y0 - iy)) ** 2
            profile = (BETA - 1) / (np.pi * alpha**2) * (1 + r2 / alpha**2) ** -BETA
            image[iy - half : iy + half + 1, ix - half : ix + half + 1] += flux * profile
        gain = spec.gain(index)
        noisy = rng.poisson(image * gain) / gain + rng.normal(0, 5.0 / gain, image.shape)
        return np.clip(np.rint(noisy), 0, spec.saturate).astype(np.uint16)

    return pixels

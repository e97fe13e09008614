"""The demo repository: synthetic exposures written, ingested, placed by the planner and
really copied; each runid's dithered exposures overlap on one tile of the demo grid."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.demo.repository import PlacementResult, fill_and_place

pytestmark = pytest.mark.timeout(600)


def place(config) -> PlacementResult:
    from spica_core.executor.agents import AgentExecutor

    engine = make_engine(config.db)

    async def run() -> PlacementResult:
        async with AgentExecutor.over_ssh(config) as executor:
            return await fill_and_place(config, engine, executor.snapshot, executor)

    try:
        return asyncio.run(run())
    finally:
        engine.dispose()


@contextlib.contextmanager
def placed_demo(directory: Path, nodes: int):
    """A demo cluster of ``nodes`` (no daemons) with its dbspica prepared and its
    repository placed (no problem)."""
    cluster = DemoCluster(directory)
    try:
        cluster.up(nodes, daemons=False)
        config = load_config(cluster.config_path)
        prepare_database(config, create=True)
        result = place(config)
        assert result.problems == []
        yield cluster, config, result
    finally:
        cluster.down()


def test_demo_images_are_placed_by_the_planner_and_really_copied(tmp_path) -> None:
    """Every demo image on a node got there through a plan and a verified copy: a ``done``
    transfer row to that node whose two checksums match the image's and the file on the
    node; the runid distribution counts exactly those images; the waiting runid is still
    all in the repository, unplanned."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from spica_core.checksum import file_checksum
    from spica_core.db.models import Image, Node, Runid, Transfer
    from spica_core.demo.repository import EXPOSURES, RUNIDS, WAITING_RUNID
    from spica_core.read_model import transfer_distribution

    with placed_demo(tmp_path / "demo", 3) as (cluster, config, result):
        placed = EXPOSURES * (len(RUNIDS) - 1)
        assert result.ingested == EXPOSURES * len(RUNIDS)
        assert result.planned == result.transferred == placed
        engine = make_engine(config.db)
        with Session(engine) as s:
            on_nodes = s.execute(
                select(Image, Node.name, Runid.name)
                .join(Node, Image.node_id == Node.id)
                .join(Runid, Image.runid_id == Runid.id)
            ).all()
            assert len(on_nodes) == placed
            per_cell: dict[tuple[str, str], int] = {}
            for image, node, runid in on_nodes:
                rows = s.scalars(select(Transfer).where(Transfer.image_id == image.id)).all()
                assert [(t.state, t.destination_node) for t in rows] == [("done", node)]
                t = rows[0]
                assert t.checksum == t.node_checksum == image.checksum
                assert image.path == t.destination_path and image.repository is None
                on_disk = Path(t.destination_path)
                assert on_disk.is_relative_to(cluster.node_root(node))
                assert file_checksum(on_disk) == (image.checksum, image.bytes)
                per_cell[(runid, node)] = per_cell.get((runid, node), 0) + 1
            waiting = s.scalars(select(Image).join(Runid).where(Runid.name == WAITING_RUNID)).all()
            assert len(waiting) == EXPOSURES
            assert all(i.repository == "incoming" and i.node_id is None for i in waiting)
            assert not s.scalar(
                select(func.count()).select_from(Transfer).where(Transfer.runid == WAITING_RUNID)
            )
        dist = transfer_distribution(engine, nodes=[n.name for n in config.nodes])
        assert dist.files == per_cell
        assert len({node for _, node in per_cell}) > 1  # the plans spread the runids
        again = place(config)
        assert (again.written, again.ingested, again.planned, again.transferred) == (0, 0, 0, 0)
        engine.dispose()


def test_a_runids_exposures_of_a_filter_cover_its_tile() -> None:
    """Each runid points at one place with dithers of 10 to 30 arcsec; its exposures of one
    filter (at least two of them) all cover the whole of the runid's demo tile, and no
    exposure reaches another runid's tile: a tile's inputs are one runid's."""
    import math

    from spica_core.demo.release import TILE_PIXELS, demo_grid
    from spica_core.demo.repository import DITHERS, demo_exposures, exposure_size, pointing
    from spica_core.synth.render import header_wcs

    grid = demo_grid()
    half_tile = TILE_PIXELS * grid.pixel_scale / 2.0  # arcsec
    dithers = [math.hypot(*d) for d in DITHERS if d != (0.0, 0.0)]
    assert min(dithers) >= 10.0 and max(dithers) <= 30.0
    by_filter: dict[tuple[str, str], int] = {}
    for exposure in demo_exposures():
        spec = exposure.spec
        ra0, dec0 = pointing(exposure.runid)
        cos_dec = math.cos(math.radians(dec0))
        # the tile's corners are inside the union of the exposure's CCDs (header WCS)
        for sx in (-1, 1):
            for sy in (-1, 1):
                ra = ra0 + sx * half_tile * 0.98 / 3600.0 / cos_dec
                dec = dec0 + sy * half_tile * 0.98 / 3600.0
                inside = False
                for ccd in range(spec.ccds):
                    x, y = header_wcs(spec, ccd).world_to_pixel_values(ra, dec)
                    ny, nx = spec.ccd_shape
                    inside |= bool(-0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5)
                assert inside, (exposure.name, sx, sy)
        for other in grid.fields:
            if other.name.endswith(exposure.runid):
                continue
            far = abs(other.ra_min - spec.ra_deg) * cos_dec
            assert far > exposure_size() / 2 + grid.tile_size / 2, (exposure.name, other.name)
        by_filter[(exposure.runid, spec.filter)] = (
            by_filter.get((exposure.runid, spec.filter), 0) + 1
        )
    assert min(by_filter.values()) >= 2

"""The console's results with Pilot, over a demo cluster (a real SSH node, daemons off) and its
SQLite dbspica seeded with two releases' stacks, their results, their runs and QFin images:
the stack detail shows the figures and the thumbnail STIFF made (read from the node), the
release comparison pairs the tiles, the data-mining screen plots the seeded rows, and a
read-only console opens both; a snapshot of the thumbnail widget in half-block cells."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.console_thumbnail import Thumbnail
from spica_core.db.engine import make_engine
from spica_core.db.models import Runid, Stack, StackResult
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from tests.conftest import require
from tests.console_support import console_app, fast_config, make_stack, settled, until
from tests.results_support import add_images, add_runs

pytestmark = pytest.mark.timeout(600)

NODE = "mix1"
TILE = "CFHTLS_W_u_021410-041200"
NEW, OLD = f"{TILE}_T0003", f"{TILE}_T0002"
ONLY_NEW = "CFHTLS_W_r_022850-041200_T0003"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FIGURES = {
    NEW: {
        "scamp_inputs": 12,
        "swarp_inputs": 7,
        "exptime": 4200.0,
        "seeing": 0.92,
        "completeness": 25.1,
        "scamp_internal_rms": 0.047,
        "scamp_external_rms": 0.21,
        "background": 101.5,
        "sources": 1834,
    },
    OLD: {
        "scamp_inputs": 10,
        "swarp_inputs": 5,
        "exptime": 3000.0,
        "seeing": 1.05,
        "completeness": 24.8,
        "scamp_internal_rms": 0.042,
        "scamp_external_rms": 0.25,
        "background": 100.0,
        "sources": 1500,
    },
    ONLY_NEW: {"seeing": 0.8, "completeness": 25.3, "exptime": 600.0},
}
#: (argv, seconds) of each stack's lines.
LINES = [
    (["spica", "stack", "prepare", "S", "--image", "805282p"], 2.0),
    (["source-extractor", "inputs/805282p.fits", "-c", "stack.sex"], 5.0),
    (["scamp", "@scamp.list", "-c", "stack.scamp"], 10.0),
    (["SWarp", "@swarp.list", "-c", "stack.swarp"], 40.0),
    (["stiff", "S.fits"], 1.0),
]
#: (filter, seeing) of the QFin images.
IMAGES = [("u", 0.91), ("u", 0.95), ("u", 1.12), ("r", 0.73), ("r", 0.78)]


def make_thumbnail(directory: Path, name: str) -> Path:
    """A small synthetic co-add (stars on a noisy sky) and STIFF's TIFF of it."""
    import numpy as np
    from astropy.io import fits

    from spica_core.synth.psf import Moffat, add_star

    require(shutil.which("stiff") is not None, "STIFF (stiff) is not installed")
    rng = np.random.default_rng(7)
    image = rng.normal(100.0, 5.0, (64, 96)).astype(np.float32)
    psf = Moffat.of(3.0, 3.0)
    for _ in range(20):
        add_star(image, rng.uniform(4, 92), rng.uniform(4, 60), rng.uniform(500, 20000), psf)
    directory.mkdir(parents=True, exist_ok=True)
    coadd = directory / f"{name}.fits"
    fits.PrimaryHDU(image).writeto(coadd, overwrite=True)
    tif = directory / f"{name}.tif"
    subprocess.run(
        ["stiff", str(coadd), "-OUTFILE_NAME", str(tif), "-VERBOSE_TYPE", "QUIET",
         "-WRITE_XML", "N"],
        check=True,
        cwd=directory,
        capture_output=True,
    )  # fmt: skip
    return tif


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    require(shutil.which("stiff") is not None, "STIFF (stiff) is not installed")
    cluster = DemoCluster(tmp_path_factory.mktemp("results") / "cluster")
    try:
        cluster.up(1, daemons=False)
        config = fast_config(cluster.config_path)
        prepare_database(config, create=True)
        engine = make_engine(config.db)
        root = cluster.node_root(NODE)
        for name in FIGURES:
            make_stack(root, engine, name, NODE, "completed", lines=len(LINES))
        thumbnail = make_thumbnail(root / "stacks" / NEW, NEW)
        with Session(engine) as s, s.begin():
            run = Runid(name="04BL06")
            s.add(run)
            s.flush()
            add_images(s, [(run.id, flt, seeing, "done") for flt, seeing in IMAGES], prefix="9")
            for name, figures in FIGURES.items():
                stack = s.scalars(select(Stack).where(Stack.name == name)).one()
                release = name.rsplit("_", 1)[1]
                stack.release, stack.survey = release, "W"
                stack.tile = name.removesuffix(f"_{release}")
                stack.filter = name.split("_")[2]
                s.add(
                    StackResult(
                        stack_id=stack.id,
                        thumbnail_path=str(thumbnail) if name == NEW else None,
                        step_seconds={"scamp": 10.0, "swarp": 40.0},
                        **figures,
                    )
                )
                add_runs(s, stack.id, NODE, LINES, T0)
        engine.dispose()
        yield cluster, thumbnail
    finally:
        if cluster.exists():
            cluster.down()


@pytest.fixture
def config(world):
    return fast_config(world[0].config_path)


def shown(static) -> str:
    """What a Static shows, as plain text (a rich table is rendered)."""
    import io

    from rich.console import Console

    out = io.StringIO()
    Console(width=200, file=out, color_system=None).print(static.content)
    return out.getvalue()


async def open_stack(pilot, name: str):
    from spica_tui.console.screens.dashboard import DashboardScreen
    from spica_tui.console.screens.stack_detail import StackDetailScreen

    await until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), "the dashboard")
    pilot.app.open_stack(name)
    await until(
        pilot,
        lambda: (
            isinstance(pilot.app.screen, StackDetailScreen) and pilot.app.screen.detail is not None
        ),
        "the stack detail",
    )
    return pilot.app.screen


async def test_stack_detail_shows_results_and_thumbnail(config, world) -> None:
    from textual_image.widget import HalfcellImage

    from spica_tui.console.thumbnail import ThumbnailView

    app = console_app(config)
    async with app.run_test(size=(180, 70)) as pilot:
        screen = await open_stack(pilot, NEW)
        results = screen.query_one("#results")
        await until(pilot, lambda: results.display, "the results section")
        text = shown(results)
        for wanted in ('0.047"', '0.210"', "4200 s", '0.92"', "25.10 mag", "101.5 ADU", "1834"):
            assert wanted in text, wanted
        assert "scamp 10.0 s" in text and "swarp 40.0 s" in text
        view = screen.query_one(ThumbnailView)
        await until(pilot, lambda: view.thumbnail is not None, "the thumbnail from the node")
        assert view.thumbnail is not None and view.thumbnail.error is None
        assert view.thumbnail.node == NODE
        assert view.thumbnail.data == world[1].read_bytes()
        # Not a terminal here: half-block cells.
        await until(pilot, lambda: view.query(HalfcellImage), "the picture")
        picture = view.query_one(HalfcellImage)
        await until(pilot, lambda: picture.size.height > 0, "the picture laid out")
        assert picture.size.width == 48
        await settled(pilot)

        # A stack without a thumbnail says so in its place.
        await pilot.press("escape")
        screen = await open_stack(pilot, OLD)
        view = screen.query_one(ThumbnailView)
        await until(pilot, lambda: view.thumbnail is not None, "the thumbnail answer")
        assert view.thumbnail is not None and view.thumbnail.error == "no thumbnail recorded"
        assert not view.query(HalfcellImage)


async def test_compare_screen(config, world) -> None:
    from spica_tui.console.screens.compare import CompareScreen

    app = console_app(config)
    async with app.run_test(size=(180, 60)) as pilot:
        await until(pilot, lambda: app.poller.polls >= 1, "the first poll")
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare screen")
        screen = app.screen
        await until(pilot, lambda: screen.comparison is not None, "the comparison")
        assert screen.chosen() == ("T0003", "T0002")
        table = screen.query_one("#comparison")
        assert [c.title for c in table.columns] == ["tile", "", "T0003", "T0002", "change"]
        row = [str(c) for c in table.get_row(f"{TILE}\tscamp_internal_rms")]
        assert row[1:] == ["SCAMP internal RMS", '0.047"', '0.042"', '+0.005" (+12 %)']
        row = [str(c) for c in table.get_row(f"{TILE}\texptime")]
        assert row[2:] == ["4200 s", "3000 s", "+1200 s (+40 %)"]
        only = [str(c) for c in table.get_row(ONLY_NEW.removesuffix("_T0003"))]
        assert only[-1] == "only in T0003" and only[3] == "-"
        summary = str(screen.query_one("#compare-summary").render())
        assert "2 tiles" in summary and "1 only in T0003" in summary

        await pilot.press("s")
        await until(pilot, lambda: screen.chosen() == ("T0002", "T0003"), "the swap")
        await until(
            pilot,
            lambda: screen.comparison is not None and screen.comparison.release == "T0002",
            "the swapped comparison",
        )
        row = [str(c) for c in table.get_row(f"{TILE}\tscamp_internal_rms")]
        assert row[2:] == ['0.042"', '0.047"', '-0.005" (-11 %)']
        await settled(pilot)


async def test_mining_screen_plots_dbspica(config, world) -> None:
    from spica_tui.console.screens.mining import MiningScreen, seconds_by, seeing_series

    app = console_app(config)
    async with app.run_test(size=(180, 60)) as pilot:
        await until(pilot, lambda: app.poller.polls >= 1, "the first poll")
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, MiningScreen), "the mining screen")
        screen = app.screen
        await until(pilot, lambda: screen.view is not None, "the figures")
        view = screen.view
        series = seeing_series(view)
        assert sorted(series) == ["r", "u"]
        assert sum(series["u"][1]) == 3 and sum(series["r"][1]) == 2
        assert len(view.completeness) == 3
        steps = seconds_by(view, "step")
        # SQLite's julianday() keeps times to a few tens of microseconds.
        assert list(steps) == ["swarp", "scamp", "source-extractor", "prepare", "stiff"]
        assert list(steps.values()) == pytest.approx([120.0, 30.0, 15.0, 6.0, 3.0], abs=1e-3)
        nodes = seconds_by(view, "node")
        assert list(nodes) == [NODE] and nodes[NODE] == pytest.approx(174.0, abs=1e-3)
        await settled(pilot)
        for name, title in (
            ("seeing", "Seeing of the QFin images"),
            ("completeness", "Completeness (80 %)"),
            ("steps", "Wall time per step"),
            ("nodes", "Wall time per node"),
        ):
            drawn = str(screen.query_one(f"#plot-{name}").render())
            assert title in drawn, name
        assert "swarp" in str(screen.query_one("#plot-steps").render())
        assert NODE in str(screen.query_one("#plot-nodes").render())


async def test_read_only_console_opens_both(config, world) -> None:
    from spica_tui.console.screens.compare import CompareScreen
    from spica_tui.console.screens.mining import MiningScreen

    app = console_app(config, read_only=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.poller.polls >= 1, "the first poll")
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare screen")
        await until(pilot, lambda: app.screen.comparison is not None, "the comparison")
        await pilot.press("escape", "m")
        await until(pilot, lambda: isinstance(app.screen, MiningScreen), "the mining screen")
        await until(pilot, lambda: app.screen.view is not None, "the figures")


async def test_thumbnail_read_from_the_node(config, world) -> None:
    """Over the node's SSH connection: by absolute path or under the root; what cannot be
    read says why (too large, outside the root, missing), never raises."""
    from spica_core.console_thumbnail import fetch_thumbnail
    from spica_core.executor.agents import AgentExecutor

    cluster, tif = world
    executor = AgentExecutor.over_ssh(config)
    try:
        got = await fetch_thumbnail(executor, NEW, NODE, str(tif))
        assert got.error is None and got.data == tif.read_bytes()
        relative = str(tif.relative_to(cluster.node_root(NODE)))
        assert (await fetch_thumbnail(executor, NEW, NODE, relative)).data == got.data
        large = await fetch_thumbnail(executor, NEW, NODE, str(tif), limit=100)
        assert large.data is None and "larger than 100 bytes" in (large.error or "")
        outside = await fetch_thumbnail(executor, NEW, NODE, "/etc/passwd")
        assert outside.data is None and "not under the root" in (outside.error or "")
        gone = await fetch_thumbnail(executor, NEW, NODE, str(tif.with_name("gone.tif")))
        assert gone.data is None and "gone.tif" in (gone.error or "")
        assert (await fetch_thumbnail(executor, NEW, None, str(tif))).data == got.data
        none = await fetch_thumbnail(executor, NEW, NODE, None)
        assert none.error == "no thumbnail recorded"
    finally:
        await executor.close()


def test_thumbnail_widget_snapshot(snap_compare, tmp_path: Path) -> None:
    """STIFF's picture of a synthetic co-add in half-block cells (every terminal's mode)."""
    from textual.app import App, ComposeResult

    from spica_tui.console.thumbnail import ThumbnailView

    data = make_thumbnail(tmp_path / "stiff", NEW).read_bytes()

    class ThumbnailApp(App[None]):
        def compose(self) -> ComposeResult:
            yield ThumbnailView(mode="halfcell", id="thumbnail")

        async def on_mount(self) -> None:
            shown = Thumbnail(NEW, NODE, f"/data/mix1/stacks/{NEW}/{NEW}.tif", data)
            await self.query_one(ThumbnailView).show(shown)

    assert snap_compare(ThumbnailApp(), terminal_size=(60, 24))

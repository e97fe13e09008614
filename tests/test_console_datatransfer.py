"""The console's DataTransfer screen with Pilot, over a demo cluster (real SSH), dbspica and
the demo repository's synthetic exposures, four runids placed by the planner and copied, one
waiting: the screen shows the disks, the waiting runid and the distribution; "transfer now"
shows the plan with Cancel focused, Cancel changes nothing, confirming copies the files
(checked on the node, byte for byte through their checksums) and the progress appears.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.checksum import file_checksum
from spica_core.db.engine import make_engine
from spica_core.db.models import Image, Runid, Transfer
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.demo.repository import WAITING_RUNID, fill_and_place
from tests.console_support import console_app, fast_config, until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    from spica_core.executor.agents import AgentExecutor

    cluster = DemoCluster(tmp_path_factory.mktemp("transfer") / "cluster")
    try:
        cluster.up(2, daemons=False)
        config = fast_config(cluster.config_path)
        prepare_database(config, create=True)
        engine = make_engine(config.db)

        async def place() -> None:
            async with AgentExecutor.over_ssh(config) as executor:
                result = await fill_and_place(config, engine, executor.snapshot, executor)
                assert result.problems == [] and result.transferred == result.planned == 32

        asyncio.run(place())
        engine.dispose()
        yield cluster
    finally:
        if cluster.exists():
            cluster.down()


@pytest.fixture
def config(demo: DemoCluster):
    return fast_config(demo.config_path)


@pytest.fixture
def engine(config):
    made = make_engine(config.db)
    try:
        yield made
    finally:
        made.dispose()


console = console_app


def rows(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def transfers_of(engine, runid: str) -> list[Transfer]:
    with Session(engine) as s:
        return list(s.scalars(select(Transfer).where(Transfer.runid == runid)))


async def open_screen(pilot):
    from spica_tui.console.screens.dashboard import DashboardScreen
    from spica_tui.console.screens.datatransfer import DataTransferScreen

    await until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), "the dashboard")
    await pilot.press("d")
    await until(pilot, lambda: isinstance(pilot.app.screen, DataTransferScreen), "DataTransfer")
    return pilot.app.screen


async def plan_modal(pilot):
    """``n``, then the confirmation once it has focus."""
    from spica_tui.console.transfer_modal import ConfirmTransfer

    app = pilot.app
    await pilot.press("n")
    await until(
        pilot,
        lambda: isinstance(app.screen, ConfirmTransfer) and app.screen.focused is not None,
        "the transfer plan modal",
    )
    return app.screen


async def test_screen_shows_disks_waiting_runid_and_distribution(config, engine) -> None:
    from textual.widgets import DataTable

    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(pilot)
        waiting = screen.query_one("#waiting", DataTable)
        disks = screen.query_one("#disks", DataTable)
        dist = screen.query_one("#distribution", DataTable)
        await until(pilot, lambda: waiting.row_count == 1 and disks.row_count == 2, "the tables")
        assert rows(waiting)[0][:2] == [WAITING_RUNID, "8"]
        assert "r.MP9601:3" in rows(waiting)[0][5]
        assert [r[0] for r in rows(disks)] == ["mix1", "mix2"]
        assert all(r[1] == "up" and r[2].endswith("%") for r in rows(disks))
        await until(pilot, lambda: dist.row_count == 5, "the distribution")
        by_runid = {r[0]: r[2:] for r in rows(dist)}
        assert by_runid[WAITING_RUNID] == ["-", "-"]
        placed = [cells for runid, cells in by_runid.items() if runid != WAITING_RUNID]
        # each placed runid whole on one node: "100.0% [8 files]" and "-"
        assert all(sorted(c) == ["-", "100.0% [8 files]"] for c in placed)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen.SCOPE == "dashboard", "back to the dashboard")


async def test_transfer_now_plan_cancel_then_confirm(demo, config, engine) -> None:
    from textual.widgets import ProgressBar, Static

    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(pilot)
        await until(pilot, lambda: screen.query_one("#waiting").row_count == 1, "the runid")

        # The plan, Cancel focused: enter changes nothing.
        modal = await plan_modal(pilot)
        assert modal.focused.id == "cancel"
        text = str(modal.query_one("#plan", Static).render())
        assert f"{WAITING_RUNID}  mix" in text and "100.0% [8 files]" in text
        assert "8 file(s)" in text and "B to copy" in text
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen, "the modal closed")
        assert transfers_of(engine, WAITING_RUNID) == []

        # Confirmed: planned, copied, the progress on screen.
        await plan_modal(pilot)
        await pilot.press("tab", "enter")
        bar = f"#bar-{WAITING_RUNID}"
        await until(pilot, lambda: screen.query(bar), "the runid's progress bar")
        await until(
            pilot,
            lambda: screen.query_one(bar, ProgressBar).percentage == 1.0,
            "the progress bar full",
        )
        stats = str(screen.query_one(f"#transfer-{WAITING_RUNID} .stats", Static).render())
        assert "8/8 files" in stats and "MB/s" in stats

    rows_ = transfers_of(engine, WAITING_RUNID)
    assert len(rows_) == 8 and {t.state for t in rows_} == {"done"}
    for t in rows_:
        assert t.checksum == t.node_checksum
        assert file_checksum(Path(t.destination_path))[0] == t.checksum
        assert Path(t.destination_path).is_relative_to(demo.node_root(t.destination_node))
    with Session(engine) as s:
        mode = s.scalar(select(Runid.transfer_mode).where(Runid.name == WAITING_RUNID))
        left = s.scalar(
            select(Image.id).where(Image.repository.is_not(None), Image.node_id.is_(None))
        )
    assert mode == "immediate"
    assert left is None  # nothing waits in the repository any more


async def test_read_only_console_offers_no_transfer_now(config) -> None:
    from spica_tui.console.actions import scoped
    from spica_tui.console.transfer_modal import ConfirmTransfer

    assert "transfer_now" not in {a.name for a in scoped("transfer", read_only=True)}
    assert "transfer_now" in {a.name for a in scoped("transfer", read_only=False)}
    app = console(config, read_only=True)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(pilot)
        assert screen.check_action("transfer_now", ()) is False
        offered = [b.binding.action for b in screen.active_bindings.values() if b.enabled]
        assert "transfer_now" not in offered and "back" in offered
        await pilot.press("n")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ConfirmTransfer)


async def test_palette_opens_datatransfer(config) -> None:
    from spica_tui.console.screens.dashboard import DashboardScreen
    from spica_tui.console.screens.datatransfer import DataTransferScreen

    app = console(config, read_only=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        await pilot.press("ctrl+p")
        await pilot.press(*"DataTransfer")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DataTransferScreen), "DataTransfer")


async def test_impossible_plan_cannot_be_confirmed(config, engine) -> None:
    """A runid bigger than every disk: the modal says so and its action button is off."""
    from textual.widgets import Button, DataTable, Static

    with Session(engine) as s, s.begin():
        run = Runid(name="05AX01", images=1, bytes=10**13)
        s.add(run)
        s.flush()
        s.add(
            Image(
                filename="999001p",
                runid_id=run.id,
                filter="r.MP9601",
                bytes=10**13,  # 10 TB: 40 TB needed, the two nodes hold 2.6 TB
                repository="incoming",
            )
        )
    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(pilot)
        waiting = screen.query_one("#waiting", DataTable)
        await until(pilot, lambda: "05AX01" in [r[0] for r in rows(waiting)], "05AX01 waiting")
        waiting.move_cursor(row=[r[0] for r in rows(waiting)].index("05AX01"))
        modal = await plan_modal(pilot)
        assert str(modal.query_one("#question", Static).render()).endswith("cannot be placed now.")
        assert "impossible" in str(modal.query_one("#plan", Static).render())
        assert modal.query_one("#confirm", Button).disabled
        assert modal.focused.id == "cancel"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen, "the modal closed")
    assert transfers_of(engine, "05AX01") == []


async def test_dashboard_disks_show_the_planners_virtual_free(config, engine) -> None:
    """The dashboard's DataTransfer panel subtracts what planned transfers promise, as the
    planner and `spica transfer status` do (not only the reserve)."""
    from spica_tui.console.panels.datatransfer import DataTransferPanel
    from spica_tui.console.screens.dashboard import DashboardScreen

    promised = 7_000_000_000
    with Session(engine) as s, s.begin():
        s.add(Transfer(filename="claim", runid="07ZZ99", source="/nowhere/claim.fits",
                       destination_node="mix1", destination_partition="raid1",
                       reserved_bytes=promised, state="planned"))  # fmt: skip
    try:
        app = console(config)
        async with app.run_test(size=(160, 50)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
            table = app.screen.query_one(DataTransferPanel).query_one("GridTable")

            def shown() -> float | None:
                if "mix1" not in table.row_keys or app.poller.snapshot.db is None:
                    return None
                return float(str(table.get_row("mix1")[2]).split()[0])

            await until(pilot, lambda: shown() is not None, "mix1's disks")
            node = app.poller.snapshot.node("mix1")
            assert node is not None
            free_less_reserve = sum(p.virtual_free_bytes for p in node.partitions) / 1e9
            value = shown()
            assert value is not None
            # Same poll's disks, less the promise (disk use moves by kilobytes between polls).
            assert abs(value - (free_less_reserve - promised / 1e9)) < 0.01
    finally:
        with Session(engine) as s, s.begin():
            s.execute(Transfer.__table__.delete().where(Transfer.runid == "07ZZ99"))

"""The console end to end with Pilot: a demo cluster over SSH, dbspica, the operations API.

Each action flow goes key -> plan modal -> confirm -> the file renamed on the node -> the row
changing state on screen. The demo's daemons are off here, so a requeued stack stays pending
and every state is the one the test made.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from spica_core.db.engine import make_engine
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from tests.conftest import run_spica
from tests.console_support import (
    console_app,
    db_state,
    fast_config,
    make_stack,
    mounted,
    queue_files,
    select_stack,
    table_row,
    until,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("console") / "cluster")
    try:
        cluster.up(2, daemons=False)
        prepare_database(fast_config(cluster.config_path), create=True)
        yield cluster
    finally:
        if cluster.exists():
            cluster.down()


@pytest.fixture
def config(demo: DemoCluster):
    return fast_config(demo.config_path)


@pytest.fixture
def engine(config):
    e = make_engine(config.db)
    yield e
    e.dispose()


console = console_app


def root(demo: DemoCluster, node: str) -> Path:
    return demo.node_root(node)


async def confirm(pilot) -> None:
    """Move from the default Cancel to the action button, and press it."""
    from spica_tui.console.modals import ConfirmPlan

    await until(
        pilot,
        lambda: isinstance(pilot.app.screen, ConfirmPlan) and pilot.app.screen.focused is not None,
        "the plan modal",
    )
    assert pilot.app.screen.focused.id == "cancel"  # the default answer
    await pilot.press("tab", "enter")


# ------------------------------------------------------------------------ action flows


async def test_requeue_flow(demo, config, engine) -> None:
    from spica_tui.console.modals import ConfirmPlan

    name = "CFHTLS_W_u_021410-041200_T0003"
    make_stack(root(demo, "mix1"), engine, name, "mix1", "failed")
    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, name)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmPlan), "the plan modal")
        plan_text = app.screen.plan.render()
        assert f"{name}.error -> queue/{name}.spica" in plan_text
        assert "resumes at line 2" in plan_text
        await confirm(pilot)
        await until(
            pilot,
            lambda: queue_files(root(demo, "mix1"), name) == [f"{name}.spica"],
            "the .error renamed to .spica on mix1",
        )
        await until(
            pilot,
            lambda: getattr(table_row(app, name), "state", None) == "pending",
            "the row to show pending",
        )
    assert db_state(engine, name) == "pending"


async def test_launch_flow(demo, config, engine) -> None:
    name = "CFHTLS_W_g_021800-085200_T0003"
    make_stack(root(demo, "mix2"), engine, name, "mix2", "planned")
    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, name)
        await pilot.press("l")
        await confirm(pilot)
        await until(
            pilot,
            lambda: queue_files(root(demo, "mix2"), name) == [f"{name}.spica"],
            "queue/<stack>.spica created on mix2",
        )
        await until(
            pilot,
            lambda: getattr(table_row(app, name), "state", None) == "pending",
            "the row to show pending",
        )


async def test_detail_log_slower_than_the_poll_still_shows(demo, config, engine) -> None:
    """A node slower to send a log than the console polls (a loaded node, a busy link): a
    poll must never cancel the fetch under way, or the log would never show."""
    from textual.widgets import Static

    from spica_tui.console.screens.stack_detail import StackDetailScreen

    name = "CFHTLS_W_z_022600-051200_T0003"
    make_stack(root(demo, "mix2"), engine, name, "mix2", "failed")
    app = console(config, read_only=True)
    fetch = app.backend.log_tail
    fetches = 0

    async def slow_fetch(node: str | None, stack: str, line: int | None = None):
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(config.console.refresh_interval * 4)  # four polls come meanwhile
        return await fetch(node, stack, line)

    app.backend.log_tail = slow_fetch
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, name)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, StackDetailScreen), "the detail")
        log = app.screen.query_one("#log", Static)
        await until(pilot, lambda: "Connection refused" in str(log.render()), "the log tail")
        assert fetches == 1  # fetched once, not restarted at each poll


async def test_unlock_flow(demo, config, engine) -> None:
    name = "CFHTLS_W_i_022200-051200_T0003"
    make_stack(root(demo, "mix1"), engine, name, "mix1", "running")
    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, name)
        await pilot.press("u")
        await confirm(pilot)
        await until(
            pilot,
            lambda: queue_files(root(demo, "mix1"), name) == [f"{name}.error"],
            "the stale .processing renamed to .error",
        )
        await until(
            pilot,
            lambda: getattr(table_row(app, name), "state", None) == "failed",
            "the row to show failed",
        )


async def test_remove_flow(demo, config, engine) -> None:
    from spica_tui.console.panels.stacks import StackTable

    name = "CFHTLS_W_z_020600-073200_T0002"
    make_stack(root(demo, "mix2"), engine, name, "mix2", "completed")
    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, name)
        await pilot.press("ctrl+d")
        await confirm(pilot)
        await until(
            pilot,
            lambda: (
                not (root(demo, "mix2") / "stacks" / name).exists()
                and queue_files(root(demo, "mix2"), name) == []
            ),
            "the stack gone from mix2",
        )
        table = app.screen.query_one(StackTable)
        await until(pilot, lambda: table.total == 0, "the row gone from the filtered view")
    assert db_state(engine, name) is None


async def test_cancel_changes_nothing(demo, config, engine) -> None:
    from spica_tui.console.modals import ConfirmPlan

    name = "805282p_V0003"
    make_stack(root(demo, "mix1"), engine, name, "mix1", "failed")
    before = sorted(str(p) for p in root(demo, "mix1").rglob("*"))
    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, name)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmPlan), "the plan modal")
        await pilot.press("enter")  # Cancel has the focus
        await until(pilot, lambda: not isinstance(app.screen, ConfirmPlan), "the modal closed")
        await pilot.pause(1.5)  # a poll or two: nothing may have moved
        assert getattr(table_row(app, name), "state", None) == "failed"
        await pilot.press("r", "escape")  # escape cancels too
        await pilot.pause(0.5)
    assert queue_files(root(demo, "mix1"), name) == [f"{name}.error"]
    assert sorted(str(p) for p in root(demo, "mix1").rglob("*")) == before
    assert db_state(engine, name) == "failed"


async def test_marks_hidden_by_the_filter_are_counted(demo, config, engine) -> None:
    from spica_tui.console.modals import ConfirmPlan

    names = ["805288p_V0003", "805295p_V0003"]
    for name in names:
        make_stack(root(demo, "mix2"), engine, name, "mix2", "failed")
    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, names[0])
        await pilot.press("space")
        await pilot.press("slash", *["backspace"] * len(names[0]), *names[1], "enter")
        await until(
            pilot,
            lambda: getattr(app.screen.query_one("StackTable").selected, "name", None) == names[1],
            "the second stack selected",
        )
        await pilot.press("space", "r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmPlan), "the plan modal")
        modal = app.screen
        assert (modal.marked, modal.hidden) == (2, 1)
        assert "2 marked stacks, 1 of them hidden by the current filter" in str(
            modal.query_one("#hidden").content
        )
        assert all(n in modal.plan.render() for n in names)
        await pilot.press("escape")
    assert [db_state(engine, n) for n in names] == ["failed", "failed"]


async def test_read_only_offers_no_dangerous_action(demo, config, engine) -> None:
    from spica_tui.console.actions import DANGEROUS, SpicaCommands
    from spica_tui.console.modals import ConfirmPlan
    from spica_tui.console.screens.help import HelpScreen

    name = "805287p_V0003"
    make_stack(root(demo, "mix1"), engine, name, "mix1", "failed")
    app = console(config, read_only=True)
    assert app.backend.ops is None  # no operations API exists to be reached at all
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, name)
        shown = {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
        assert not shown & DANGEROUS
        for key in ("r", "l", "u", "ctrl+d"):
            await pilot.press(key)
            await pilot.pause(0.3)
            assert not isinstance(app.screen, ConfirmPlan)
        palette = SpicaCommands(app.screen)
        titles = [title.lower() for _, title in palette._candidates()]
        assert titles and not any(t.startswith(tuple(DANGEROUS)) for t in titles)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the key map")
        assert app.screen.listed and not set(app.screen.listed) & DANGEROUS
    assert queue_files(root(demo, "mix1"), name) == [f"{name}.error"]
    assert db_state(engine, name) == "failed"


async def test_stopped_node_turns_down_and_stale(demo, config, engine) -> None:
    from spica_tui.console.panels.header import HeaderPanel
    from spica_tui.console.panels.nodes import NodesPanel

    app = console(config)
    async with app.run_test(size=(160, 50)) as pilot:
        header = await mounted(pilot, HeaderPanel)
        nodes = app.screen.query_one(NodesPanel).query_one("GridTable")
        await until(pilot, lambda: "nodes 2/2 up" in header.content.plain, "both nodes up")
        try:
            demo.stop_node("mix2")
            await until(
                pilot,
                lambda: "1 down (mix2)" in header.content.plain,
                "the header to report mix2 down",
            )
            cells = [str(c) for c in nodes.get_row("mix2")]
            assert "ago" in cells[5]  # last seen: the time of the last good data, and its age
            assert cells[6]  # last error
            problems = app.screen.query_one("ProblemsPanel").query_one("GridTable")
            await until(
                pilot,
                lambda: any(
                    "Unable to contact mix2 via ssh" in str(c)
                    for key in problems.row_keys
                    for c in problems.get_row(key)
                ),
                "the hardware problem on the problems panel",
            )
        finally:
            demo.start_node("mix2")
        await until(pilot, lambda: "nodes 2/2 up" in header.content.plain, "mix2 back up")


async def test_node_down_from_the_start_shows_when_dbspica_last_saw_it(
    demo, config, engine
) -> None:
    from spica_tui.console.panels.nodes import NodesPanel

    assert run_spica("--config", str(demo.config_path), "nodes").returncode == 0  # recorded
    demo.stop_node("mix2")
    try:
        app = console(config)
        async with app.run_test(size=(160, 50)) as pilot:
            nodes = (await mounted(pilot, NodesPanel)).query_one("GridTable")

            def mix2_last_seen() -> str | None:
                if "mix2" not in nodes.row_keys:
                    return None
                cells = [str(c) for c in nodes.get_row("mix2")]
                return cells[5] if cells[6] else None  # once its poll failed (last error)

            await until(pilot, mix2_last_seen, "mix2 polled down")
            seen = mix2_last_seen()
            assert seen and "never" not in seen and "ago" in seen, seen
    finally:
        demo.start_node("mix2")


async def test_dbspica_away_shows_stale_with_last_good_time(mysql_url: str) -> None:
    """dbspica's database is dropped under the console, then comes back."""
    from sqlalchemy import create_engine, make_url, text

    from spica_core.config import parse_config
    from spica_tui.console.panels.header import HeaderPanel

    config = parse_config(f'[db]\nurl = "{mysql_url}"\n[console]\nrefresh_interval = 0.3\n', "test")
    prepare_database(config, create=True)
    url = make_url(mysql_url)
    admin = create_engine(url.set(database=None))
    app = console(config)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            header = await mounted(pilot, HeaderPanel)
            await until(pilot, lambda: "dbspica ok" in header.content.plain, "dbspica ok")
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE `{url.database}`"))
            await until(
                pilot,
                lambda: "dbspica UNREACHABLE" in header.content.plain,
                "dbspica shown unreachable",
            )
            assert "data as of" in header.content.plain
            for panel in ("ProblemsPanel", "StacksPanel", "RunidsPanel"):
                assert "stale: as of" in str(app.screen.query_one(panel).border_title), panel
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE `{url.database}`"))
            prepare_database(config, create=True)
            await until(pilot, lambda: "dbspica ok" in header.content.plain, "dbspica back")
    finally:
        admin.dispose()

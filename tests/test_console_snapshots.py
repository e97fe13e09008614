"""SVG snapshots of the console on a fixed world (tests/console_world.py): the dashboard, the
stack detail, a confirmation modal and the QFin screen. Update after a deliberate change with
``pytest tests/test_console_snapshots.py --snapshot-update`` and review the SVGs."""

from __future__ import annotations

import pytest

from spica_core.executor import StackChange
from spica_core.operations import OpAction, OperationRequest, Plan, PlanItem, Selection
from tests.console_support import settled, until
from tests.console_world import FAILED, frozen_console, make_db

SIZE = (160, 50)
URL = "sqlite:///dbspica.sqlite"  # relative to the test's own working directory

pytestmark = pytest.mark.timeout(300)


async def dashboard_ready(pilot) -> None:
    from spica_tui.console.panels.stacks import StackTable

    app = pilot.app
    table = app.screen.query_one(StackTable)
    await until(pilot, lambda: app.poller.polls >= 1, "the first poll")
    await until(
        pilot,
        lambda: table.total is not None and len(table.rows) == table.total,
        "the stacks window and its count",
    )
    await settled(pilot)


def test_dashboard(snap_compare) -> None:
    """Every panel: a down node (mix4), an agent-missing one (pix1), stale rows, problems."""
    make_db(URL)
    assert snap_compare(frozen_console(URL), terminal_size=SIZE, run_before=dashboard_ready)


def test_stack_detail(snap_compare) -> None:
    """The failed stack: metadata, per-line status, the log tail from its node, files."""
    from spica_tui.console.screens.stack_detail import StackDetailScreen

    make_db(URL)

    async def open_failed(pilot) -> None:
        from spica_tui.console.panels.stacks import StackTable

        await dashboard_ready(pilot)
        await pilot.press("4")
        table = pilot.app.screen.query_one(StackTable)
        await until(pilot, lambda: table.total == 2 and len(table.rows) == 2, "the failed view")
        await pilot.press("down", "enter")
        await until(
            pilot,
            lambda: (
                isinstance(pilot.app.screen, StackDetailScreen)
                and pilot.app.screen.tail is not None
            ),
            "the detail and its log tail",
        )
        assert pilot.app.screen.stack == FAILED
        await settled(pilot)

    assert snap_compare(frozen_console(URL), terminal_size=SIZE, run_before=open_failed)


def test_confirmation_modal(snap_compare) -> None:
    """A requeue plan as --dry-run prints it; two marks, one hidden by the filter; Cancel
    has the focus."""
    from spica_tui.console.modals import ConfirmPlan

    make_db(URL)
    request = OperationRequest(
        OpAction.REQUEUE, Selection(names=(FAILED, "805282p_V0003")), user="laurent"
    )
    plan = Plan(
        request,
        (
            PlanItem(
                FAILED,
                "mix3",
                "failed",
                "pending",
                node_change=StackChange(
                    stack=FAILED,
                    from_="failed",
                    to="pending",
                    rename=(f"queue/{FAILED}.error", f"queue/{FAILED}.spica"),
                    resume_line=3,
                ),
                db_change="stack.state failed -> pending",
            ),
            PlanItem(
                "805282p_V0003",
                "mix4",
                "failed",
                "pending",
                refused="node mix4 unreachable: connection refused",
                unreachable=True,
            ),
        ),
    )

    async def show_modal(pilot) -> None:
        await dashboard_ready(pilot)
        pilot.app.push_screen(ConfirmPlan(plan, marked=2, hidden=1))
        await until(
            pilot,
            lambda: (
                isinstance(pilot.app.screen, ConfirmPlan) and pilot.app.screen.focused is not None
            ),
            "the modal, focused",
        )
        assert pilot.app.screen.focused.id == "cancel"
        await settled(pilot)

    assert snap_compare(frozen_console(URL), terminal_size=SIZE, run_before=show_modal)


def test_qfin_screen(snap_compare) -> None:
    """Per-runid figures, the breakdowns of one runid, the units running, a search."""
    from spica_core.config import DatabaseConfig
    from spica_core.db.engine import make_engine
    from tests.qfin_world import images, seed

    make_db(URL)
    engine = make_engine(DatabaseConfig(url=URL))
    try:
        seed(engine, images(("mix1", "mix2", "pix2"), first=820000))
    finally:
        engine.dispose()

    async def searched(pilot) -> None:
        from textual.widgets import Input

        app = pilot.app
        await until(pilot, lambda: app.poller.polls >= 1, "the first poll")
        await pilot.press("f")
        await until(pilot, lambda: app.screen.SCOPE == "qfin", "the QFin screen")
        runids = app.screen.query_one("#runids")
        await until(pilot, lambda: runids.row_count > 1, "the runids")
        runids.move_to(runids.row_keys.index("04BF29"))
        await until(
            pilot, lambda: "04BF29" in str(app.screen.query_one("#summary").render()), "04BF29"
        )
        app.screen.query_one("#seeing-max", Input).focus()
        await pilot.press(*"1.2", "enter")
        title = app.screen.query_one("#results-title")
        await until(pilot, lambda: "found" in str(title.render()), "the search")
        app.screen.query_one("#results").focus()
        await settled(pilot)

    assert snap_compare(frozen_console(URL), terminal_size=(160, 60), run_before=searched)

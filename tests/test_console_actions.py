"""The action registry feeds the bindings, the key map (help), the command palette, and the
configured key remapping; dangerous actions follow the read-only switch and the state."""

from __future__ import annotations

import pytest

from spica_tui.console.actions import (
    ACTIONS,
    BY_NAME,
    DANGEROUS,
    SpicaCommands,
    allowed,
    bindings,
    keymap,
)
from tests.console_support import select_stack, until
from tests.console_world import FAILED, frozen_console, make_db

URL = "sqlite:///dbspica.sqlite"

pytestmark = pytest.mark.timeout(300)


def test_every_action_is_bound_where_the_registry_says() -> None:
    from spica_tui.console.app import SpicaConsole
    from spica_tui.console.screens.dashboard import DashboardScreen
    from spica_tui.console.screens.datatransfer import DataTransferScreen
    from spica_tui.console.screens.qfin import QfinScreen
    from spica_tui.console.screens.stack_detail import StackDetailScreen

    for scope, owner in (
        ("app", SpicaConsole),
        ("dashboard", DashboardScreen),
        ("detail", StackDetailScreen),
        ("transfer", DataTransferScreen),
        ("qfin", QfinScreen),
    ):
        ids = {b.id for b in owner.BINDINGS}
        assert ids == {a.name for a in ACTIONS if scope in a.scopes}, scope
        for binding in bindings(scope):  # each screen has the method its binding runs
            method = "action_" + binding.action.split("(")[0]
            assert hasattr(owner, method) or hasattr(SpicaConsole, method), (scope, method)
    assert {"launch", "requeue", "unlock", "remove", "transfer_now", "grade"} == DANGEROUS


def test_what_is_offered() -> None:
    assert allowed("requeue", read_only=False, state="failed")
    assert not allowed("requeue", read_only=False, state="completed")  # the state machine
    assert not allowed("requeue", read_only=True, state="failed")
    assert not allowed("remove", read_only=False, reachable=False)
    assert allowed("unlock", read_only=False, state="running")
    assert allowed("help", read_only=True) and allowed("filter", read_only=True)
    remap, unknown = keymap({"requeue": "R", "explode": "x"})
    assert remap == {"requeue": "R"} and unknown == ["explode"]


async def test_remapped_key_runs_the_action_and_shows_everywhere() -> None:
    from spica_tui.console.modals import ConfirmPlan
    from spica_tui.console.screens.help import HelpScreen

    make_db(URL)
    app = frozen_console(URL, 'keys = { requeue = "R", nonsense = "x" }\n')
    warnings: list[str] = []
    notify = app.notify

    def noting(message: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
        warnings.append(message)
        notify(message, **kwargs)

    app.notify = noting  # type: ignore[method-assign]
    async with app.run_test(size=(160, 50), notifications=True) as pilot:
        await until(pilot, lambda: app.poller.polls >= 1, "the first poll")
        assert any("unknown action(s) nonsense" in m for m in warnings)
        await select_stack(pilot, FAILED)
        await pilot.press("r")  # the default key is gone
        await pilot.pause(0.5)
        assert not isinstance(app.screen, ConfirmPlan)
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmPlan), "the plan modal")
        await pilot.press("escape")
        titles = [title for _, title in SpicaCommands(app.screen)._candidates()]
        assert "Requeue (R)" in titles
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the key map")
        assert "requeue" in app.screen.listed
        assert app.screen.remapped == {"requeue": "R"}


async def test_palette_runs_an_action() -> None:
    from spica_tui.console.screens.help import HelpScreen

    make_db(URL)
    app = frozen_console(URL, read_only=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.poller.polls >= 1, "the first poll")
        provider = SpicaCommands(app.screen)
        hits = [hit async for hit in provider.search("keys")]
        assert hits and "Keys" in str(hits[0].match_display)
        app.call_later(hits[0].command)  # as the palette runs it
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the key map")
        assert BY_NAME["requeue"].name not in app.screen.listed  # read-only


async def test_a_read_only_console_has_no_operations() -> None:
    """``--read-only`` builds the backend without the operations API: an action reaching the
    backend through any path is refused there, and nothing on a node or in dbspica moves."""
    from spica_core.errors import SpicaError
    from spica_core.operations import OpAction, OperationRequest, Selection

    make_db(URL)
    app = frozen_console(URL, read_only=True)
    assert app.backend.ops is None and app.read_only
    request = OperationRequest(OpAction.REQUEUE, Selection(names=(FAILED,)), user="laurent")
    try:
        with pytest.raises(SpicaError, match="read-only: it has no operations"):
            await app.backend.plan(request)
    finally:
        await app.backend.close()
    writable = frozen_console(URL)
    try:
        assert writable.backend.ops is not None and not writable.read_only
    finally:
        await writable.backend.close()


def test_console_and_demo_help_import_no_textual() -> None:
    """Textual loads inside ``spica console`` / ``spica demo`` only, never for their help."""
    import json
    import subprocess
    import sys

    for args in (["console", "--help"], ["demo", "--help"]):
        probe = (
            "import sys, json\nfrom spica_tui.cli import main\n"
            f"sys.argv = ['spica', *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
        assert "typer" in loaded and "textual" not in loaded, args


async def test_the_key_bar_follows_the_selected_stack_and_a_click_presses_a_key() -> None:
    """The footer shows requeue on the failed stack (mix3 answers) and not on a completed
    one; a click on a key of the footer is that key pressed."""
    from spica_tui.console.modals import ConfirmPlan
    from spica_tui.console.panels.key_bar import KeyBar

    make_db(URL)
    app = frozen_console(URL)
    async with app.run_test(size=(160, 50)) as pilot:
        await select_stack(pilot, "CFHTLS_W_g_021800-085200_T0003")  # completed, on mix2
        bar = app.screen.query_one(KeyBar)
        await until(pilot, lambda: "Mark" in str(bar.content), "the footer")
        await pilot.pause(0.3)
        assert " r Requeue " not in str(bar.content)
        await select_stack(pilot, FAILED)
        await until(pilot, lambda: " r Requeue " in str(bar.content), "requeue offered")
        x = str(bar.content).index(" r Requeue ") + 2
        assert await pilot.click(KeyBar, offset=(x, 0))
        await until(pilot, lambda: isinstance(app.screen, ConfirmPlan), "the requeue plan")
        await pilot.press("escape")

"""Console widgets on their own: LiveTable redraws, the header outlives no screen."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import DataTable

from spica_tui.console.panels._common import LiveTable


class _OneTable(App[None]):
    def compose(self) -> ComposeResult:
        yield LiveTable(cursor_type="row")


async def test_redrawn_when_widths_change_and_only_then() -> None:
    app = _OneTable()
    async with app.run_test(size=(80, 10)) as pilot:
        table = app.query_one(LiveTable)
        redraws: list[int] = []
        original = table.notify_style_update

        def counting() -> None:
            redraws.append(1)
            original()

        table.notify_style_update = counting  # type: ignore[method-assign]
        table.add_columns("", "node", "disks")
        table.add_row("●", "mix1", "34% █░░░", key="mix1")
        await pilot.pause()
        assert redraws, "new cells widened the columns: the table must be redrawn"
        assert [c.content_width for c in table.columns.values()] == [1, 4, 8]

        redraws.clear()
        table.update_cell("mix1", list(table.columns)[2], "35% █░░░", update_width=True)
        await pilot.pause()
        assert redraws == []  # same widths: the caches stay

        table.update_cell("mix1", list(table.columns)[2], "100% ████", update_width=True)
        await pilot.pause()
        assert redraws and table.columns[list(table.columns)[2]].content_width == 9
        header, row = (table.render_line(y).text for y in (0, 1))
        assert header.index("disks") == row.index("100%")


def test_the_hook_is_still_there() -> None:
    """LiveTable overrides the step where DataTable measures new cells when idle; were it
    renamed in a Textual upgrade, the override would silently stop working."""
    assert "_update_dimensions" in vars(DataTable)
    assert LiveTable._update_dimensions is not DataTable._update_dimensions


async def test_header_updates_skip_screens_being_composed_or_torn_down(tmp_path, monkeypatch):
    """The clock and the poller may call a screen before its header is mounted or after it
    was removed (the console quitting): nothing is shown, nothing raises."""
    from spica_tui.console.panels.header import HeaderPanel, show_header
    from spica_tui.console.screens.dashboard import DashboardScreen
    from tests.console_support import mounted
    from tests.console_world import frozen_console, make_db

    monkeypatch.chdir(tmp_path)
    make_db("sqlite:///dbspica.sqlite")
    app = frozen_console("sqlite:///dbspica.sqlite")
    async with app.run_test(size=(160, 50)) as pilot:
        header = await mounted(pilot, HeaderPanel)
        assert show_header(app.screen) is True and "SPICA" in header.content.plain
        composing = DashboardScreen()  # never mounted: no header, no panels
        assert show_header(composing) is False
        composing.show_snapshot(app.poller.snapshot)
        await header.remove()  # as when the console quits
        assert show_header(app.screen) is False
        app.screen.show_snapshot(app.poller.snapshot)
        app._tick()


async def test_a_count_in_flight_is_not_restarted_by_polls(tmp_path, monkeypatch):
    """A regex count over a big dbspica can outlast the poll interval: a poll asking for the
    same count again must leave it running (restarting it would never let it finish)."""
    import asyncio

    from spica_core.read_model import StackSelection
    from spica_tui.console.panels.stacks import StackTable
    from tests.console_support import mounted, until
    from tests.console_world import frozen_console, make_db

    monkeypatch.chdir(tmp_path)
    make_db("sqlite:///dbspica.sqlite")
    app = frozen_console("sqlite:///dbspica.sqlite")
    async with app.run_test(size=(160, 50)) as pilot:
        table = await mounted(pilot, StackTable)
        await until(pilot, lambda: table.total is not None, "the first count")
        backend = app.backend
        real_counts = backend.counts
        started: list[StackSelection] = []
        release = asyncio.Event()

        async def slow_counts(query: StackSelection):
            started.append(query)
            await release.wait()
            return await real_counts(query)

        monkeypatch.setattr(backend, "counts", slow_counts)
        screen = app.screen
        screen.fetch_counts()
        for _ in range(3):  # polls while the count runs
            await pilot.pause(0.05)
            screen.fetch_counts()
        await pilot.pause(0.05)
        assert len(started) == 1
        release.set()
        await until(pilot, lambda: not screen._fetching, "the count done")
        screen.fetch_counts()  # done: the next poll counts again
        await until(pilot, lambda: len(started) == 2, "a new count")
        await until(pilot, lambda: not screen._fetching, "the second count done")
        assert table.total is not None

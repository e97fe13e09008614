"""Console widgets on their own: the grid tables draw what changed and what is on screen,
the header outlives no screen."""

from __future__ import annotations

from textual.app import App, ComposeResult

from spica_tui.console.panels.line_table import GridTable


class _OneGrid(App[None]):
    def __init__(self, table: GridTable) -> None:
        super().__init__()
        self.table = table

    def compose(self) -> ComposeResult:
        yield self.table


def _text(table: GridTable, y: int) -> str:
    return table.render_line(y).text


async def test_columns_follow_the_widest_cell_and_stay_aligned() -> None:
    table = GridTable("", "node", "disks")
    async with _OneGrid(table).run_test(size=(80, 10)) as pilot:
        table.set_rows([("mix1", ["●", "mix1", "34% █░░░"])])
        await pilot.pause()
        assert [c.width for c in table.columns] == [1, 4, 8]
        table.set_rows([("mix1", ["●", "mix1", "100% ████"])])
        await pilot.pause()
        assert table.columns[2].width == 9
        header, row = _text(table, 0), _text(table, 1)
        assert header.index("disks") == row.index("100%")


async def test_only_changed_rows_are_drawn_again() -> None:
    table = GridTable("node", "load")
    drawn: list[int] = []
    real = table.render_row

    def counting(index: int, width: int):  # type: ignore[no-untyped-def]
        drawn.append(index)
        return real(index, width)

    table.render_row = counting  # type: ignore[method-assign]
    async with _OneGrid(table).run_test(size=(40, 10)) as pilot:
        rows = [(f"n{i}", [f"n{i}", f"{i}.0"]) for i in range(5)]
        table.set_rows(rows)
        await pilot.pause()
        assert sorted(set(drawn)) == [0, 1, 2, 3, 4]
        drawn.clear()
        table.set_rows(rows)  # the very same cells: nothing compared, nothing drawn
        await pilot.pause()
        assert drawn == []
        rows[3] = ("n3", ["n3", "9.0"])  # one load changed, same width
        table.set_rows(rows)
        await pilot.pause()
        assert drawn == [3]
        assert "9.0" in _text(table, 4)


async def test_a_wide_grid_renders_only_the_cells_on_screen(monkeypatch) -> None:
    """40 runids x 100 nodes, as at a big site: a frame renders the cells it shows, and the
    pinned runid column stays while the node columns scroll."""
    from spica_tui.console.panels import line_table

    rendered: list[str] = []
    real = line_table._cell

    def counting(console, text, width):  # type: ignore[no-untyped-def]
        rendered.append(text.plain)
        return real(console, text, width)

    monkeypatch.setattr(line_table, "_cell", counting)
    nodes = [f"node{n:02d}" for n in range(100)]
    table = GridTable("runid", *nodes, fixed_columns=1)
    async with _OneGrid(table).run_test(size=(60, 12)) as pilot:
        table.set_rows(
            (f"R{r:02d}", [f"R{r:02d}", *(f"{r}/{n}" for n in range(100))]) for r in range(40)
        )
        await pilot.pause()
        assert table.virtual_size.width == 7 + 100 * 8  # runid, then 100 node columns
        # 11 lines on screen (header and 10 rows), each the runid and ~7 node columns.
        assert 0 < len(rendered) < 11 * 10, len(rendered)
        assert _text(table, 0).split()[:2] == ["runid", "node00"]
        table.scroll_to(x=8 * 50, animate=False, immediate=True)  # 50 node columns along
        await pilot.pause()
        header, first = _text(table, 0).split(), _text(table, 1).split()
        assert header[:3] == ["runid", "node50", "node51"]
        assert first[:3] == ["R00", "0/50", "0/51"]
        assert len(rendered) < 4 * 11 * 10  # still only what each frame shows


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


async def test_a_filters_rows_come_at_once_and_a_short_window_gives_its_count(
    tmp_path, monkeypatch
):
    """A filter change fetches its first window at once, not at the next poll (there is
    none here: the poller is stopped). That window, shorter than asked for, ends the view:
    the status line shows the count with the rows, whatever the count (a scan of every
    stack) still takes."""
    import asyncio

    from spica_tui.console.panels.stacks import StacksPanel, StackTable
    from tests.console_support import mounted, until
    from tests.console_world import frozen_console, make_db

    monkeypatch.chdir(tmp_path)
    make_db("sqlite:///dbspica.sqlite")
    app = frozen_console("sqlite:///dbspica.sqlite")
    async with app.run_test(size=(160, 50)) as pilot:
        table = await mounted(pilot, StackTable)
        await until(pilot, lambda: table.total is not None, "the first count")
        release = asyncio.Event()
        real_counts = app.backend.counts

        async def held_counts(query):  # type: ignore[no-untyped-def]
            await release.wait()
            return await real_counts(query)

        monkeypatch.setattr(app.backend, "counts", held_counts)
        app.poller.stop()
        await pilot.press("slash", *"W_g_0218")
        status = app.screen.query_one("#stacks-status")
        await until(pilot, lambda: "row 1 of 4" in str(status.content), "the count from the rows")
        assert len(table.rows) == 4 and not release.is_set()
        assert app.screen.query_one(StacksPanel).view.text == "W_g_0218"
        release.set()


async def test_a_poll_fetches_no_window_fetched_moments_ago_unless_asked(tmp_path, monkeypatch):
    """The operator typing a filter fetches a window per key: a poll right after fetches the
    same window again only when asked for (ctrl+r, or after an operation)."""
    from spica_tui.console.panels.stacks import StackTable
    from tests.console_support import mounted, until
    from tests.console_world import frozen_console, make_db

    monkeypatch.chdir(tmp_path)
    make_db("sqlite:///dbspica.sqlite")
    app = frozen_console("sqlite:///dbspica.sqlite")
    async with app.run_test(size=(160, 50)) as pilot:
        table = await mounted(pilot, StackTable)
        await until(pilot, lambda: table.total is not None and table.rows, "the first window")
        app.poller.stop()
        screen = app.screen
        await until(pilot, lambda: not screen._fetching, "the fetches done")
        pages: list[object] = []
        real_page = app.backend.page

        async def noted_page(*args, **kwargs):  # type: ignore[no-untyped-def]
            pages.append(args[0])
            return await real_page(*args, **kwargs)

        monkeypatch.setattr(app.backend, "page", noted_page)
        screen.fetch_window()  # as the table asks for it
        await until(pilot, lambda: len(pages) == 1 and not screen._fetching, "the window")
        screen.show_snapshot(app.poller.snapshot)  # a poll, moments later
        await pilot.pause(0.2)
        assert len(pages) == 1
        app.action_refresh()  # ctrl+r (the poller is stopped: the snapshot is handed in)
        screen.show_snapshot(app.poller.snapshot)
        await until(pilot, lambda: len(pages) == 2, "the window fetched anew")

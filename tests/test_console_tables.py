"""LiveTable: the console's tables are redrawn whole once new cells change column widths."""

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

"""Stacks by state: view tabs with counts, the filter, and a virtual table of the stacks.

The table never holds the whole stack list: it is a Line API widget whose height is the
number of stacks in the view, and it asks (``WindowWanted``) for the rows around what it
shows; the screen fetches them through the core (``page_stacks``) and hands them back with
:meth:`StacksPanel.show_page`. Rows are compared by index and content, and only the lines
that changed are repainted. Moving the cursor inside the loaded window costs no query.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import var
from textual.strip import Strip
from textual.widgets import Input, Static, Tab, Tabs

from spica_core.errors import UsageError
from spica_core.read_model import StackPage, StackSelection
from spica_core.reports import StackRow
from spica_core.states import StackState
from spica_core.text import printable
from spica_tui.console.panels._common import Panel
from spica_tui.console.panels.line_table import Column, LineTable, fit

STATE_STYLES = {
    "planned": Style(dim=True),
    "pending": Style(color="cyan"),
    "running": Style(color="yellow", bold=True),
    "completed": Style(color="green"),
    "failed": Style(color="red", bold=True),
}
VIEWS: tuple[StackState | None, ...] = (
    None,
    StackState.PENDING,
    StackState.RUNNING,
    StackState.COMPLETED,
    StackState.FAILED,
    StackState.PLANNED,
)
MARK = "●"


def view_id(state: StackState | None) -> str:
    return f"view-{state.value if state else 'all'}"


def view_label(state: StackState | None, count: int | None) -> Text:
    name = state.value.capitalize() if state else "All"
    text = Text(name)
    if count is not None:
        text.append(f" {count:,}", STATE_STYLES.get(state.value if state else "", Style()))
    return text


def _time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%m-%d %H:%M:%S")


def _line(row: StackRow) -> str:
    if not row.lines:
        return ""
    if row.state == "failed" and row.failed_line:
        return f"✗{row.failed_line}/{row.lines}"
    return f"{row.progress}/{row.lines}"


#: (title, width, right-aligned, value); the name and error columns share what is left.
_FIXED: tuple[tuple[str, int, bool], ...] = (
    ("state", 9, False),
    ("node", 8, False),
    ("prio", 4, True),
    ("step", 7, False),
    ("runid", 7, False),
    ("filter", 6, False),
    ("line", 7, True),
    ("updated", 14, False),
)
#: Columns given up first when the terminal is narrow.
_DROP_ORDER = ("step", "filter", "updated", "runid", "prio", "line")


def _value(title: str, row: StackRow) -> str:
    match title:
        case "stack":
            return row.name
        case "state":
            return row.state
        case "node":
            return row.node or "-"
        case "prio":
            return str(row.priority)
        case "step":
            return row.step
        case "runid":
            return row.runid or ""
        case "filter":
            return row.filter or ""
        case "line":
            return _line(row)
        case "updated":
            return _time(row.updated_at)
        case "error":
            return " ".join((row.error or "").split())
    return ""


def layout_columns(width: int) -> list[Column]:
    """Columns for a table ``width`` cells wide: the stack name first, the error last."""
    fixed = list(_FIXED)
    for drop in _DROP_ORDER:
        used = 2 + sum(w + 1 for _, w, _ in fixed)
        if width - used >= 50:
            break
        fixed = [c for c in fixed if c[0] != drop]
    used = 2 + sum(w + 1 for _, w, _ in fixed)
    rest = max(12, width - used)
    name = max(12, min(44, rest * 3 // 5 if rest > 40 else rest))
    error = max(0, rest - name - 1)
    columns = [Column("", 1), Column("stack", name)]
    columns += [Column(t, w, r) for t, w, r in fixed]
    if error >= 5:
        columns.append(Column("error", error))
    return columns


class StackTable(LineTable):
    """A virtual table over a view of dbspica's stacks (see the module docstring)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"stack-table--marked"}
    DEFAULT_CSS = """
    StackTable {
        overflow-x: hidden;
        overflow-y: scroll;
    }
    StackTable > .stack-table--marked { color: $text-warning; text-style: bold; }
    """

    class WindowWanted(Message):
        """Rows ``offset .. offset+limit`` of the view are needed on screen."""

        def __init__(self, offset: int, limit: int) -> None:
            super().__init__()
            self.offset = offset
            self.limit = limit

    class CursorMoved(Message):
        def __init__(self, row: StackRow | None) -> None:
            super().__init__()
            self.row = row

    class Opened(Message):
        """Enter or a double click on a row."""

        def __init__(self, row: StackRow) -> None:
            super().__init__()
            self.row = row

    #: Shown when the view holds no stack.
    empty_text: var[str] = var("no stacks")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.total: int | None = None
        self.rows: dict[int, StackRow] = {}
        self.marked: set[str] = set()
        self._columns: list[Column] = []
        self._requested: tuple[int, int] | None = None

    # -- data in

    @property
    def selected(self) -> StackRow | None:
        return self.rows.get(self.cursor)

    @property
    def row_count(self) -> int:
        if self.total is not None:
            return self.total
        return max(self.rows, default=-1) + 1

    def reset(self) -> None:
        """A new view: forget the rows, go to the top, ask for the first window."""
        self.rows = {}
        self.total = None
        self._requested = None
        self.cursor = 0
        self._lines.clear()
        self._resize_virtual()
        self.scroll_to(y=0, animate=False, immediate=True)
        self.refresh()
        self.want_window(force=True)

    def set_window(self, offset: int, rows: tuple[StackRow, ...]) -> None:
        """Rows ``offset..`` of the current view; repaints only the lines that changed."""
        selected = self.selected.name if self.selected else None
        new = {offset + i: row for i, row in enumerate(rows)}
        changed = {i for i in new if self.rows.get(i) != new[i]}
        changed |= {i for i in self.rows if i not in new}
        self.rows = new
        self._requested = None
        if self.total is None or (rows and offset + len(rows) > self.total):
            self._resize_virtual()
        if selected is not None and self.rows.get(self.cursor, None) is not None:
            moved_to = next((i for i, r in new.items() if r.name == selected), None)
            if moved_to is not None and moved_to != self.cursor:
                self.move_to(moved_to)
        self.repaint(changed)
        self.tell(self.CursorMoved(self.selected))
        self.want_window()

    def set_total(self, total: int) -> None:
        if total == self.total:
            return
        self.total = total
        for index in [i for i in self.rows if i >= total]:
            del self.rows[index]
        self._resize_virtual()
        if self.cursor >= total:
            self.cursor = max(0, total - 1)
        self.refresh()
        self.want_window()

    def toggle_mark(self) -> StackRow | None:
        row = self.selected
        if row is None:
            return None
        self.marked.symmetric_difference_update({row.name})
        self.repaint({self.cursor})
        return row

    def clear_marks(self) -> None:
        self.marked.clear()
        self.forget_lines()

    # -- window management

    def want_window(self, *, force: bool = False) -> None:
        """Ask for the rows around the viewport unless they are loaded or asked for."""
        height = self._visible_rows()
        top = round(self.scroll_y)
        end = top + height if self.total is None else min(self.total, top + height)
        if not force and all(i in self.rows for i in range(top, end)):
            return
        offset = max(0, top - height)
        wanted = (offset, 3 * height)
        if wanted == self._requested and not force:
            return
        self._requested = wanted
        self.tell(self.WindowWanted(*wanted))

    def on_resize(self, event: events.Resize) -> None:
        self._columns = layout_columns(self.scrollable_content_region.width)
        self._lines.clear()
        self._resize_virtual()
        self.want_window()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if round(old) != round(new):
            self.want_window()

    # -- cursor

    def cursor_moved(self) -> None:
        self.tell(self.CursorMoved(self.selected))

    def on_click(self, event: events.Click) -> None:
        index = self.row_at(event)
        if index is not None:
            self.move_to(index)
            if event.chain >= 2 and self.selected is not None:
                self.tell(self.Opened(self.selected))

    # -- rendering

    def render_beyond(self, index: int, width: int) -> Strip:
        if index == 0 and self.total == 0:
            return self.placeholder(f"  {self.empty_text}", width)
        return super().render_beyond(index, width)

    def row_state(self, index: int) -> Hashable:
        row = self.rows.get(index)
        return (row, row is not None and row.name in self.marked)

    def render_header(self, width: int) -> Strip:
        if not self._columns:
            self._columns = layout_columns(width)
        style = self.get_component_rich_style("line-table--header")
        segments = []
        for column in self._columns:
            text = fit(column.title, column.width, column.right)
            segments += [Segment(text, style), Segment(" ", style)]
        return Strip(segments).adjust_cell_length(width, style)

    def render_row(self, index: int, width: int) -> Strip:
        if not self._columns:
            self._columns = layout_columns(width)
        row = self.rows.get(index)
        base = self.rich_style
        if row is None:
            return self.placeholder("  …", width)
        marked = row.name in self.marked
        mark_style = self.get_component_rich_style("stack-table--marked")
        segments: list[Segment] = []
        for column in self._columns:
            if column.title == "":
                segments.append(Segment(MARK if marked else " ", mark_style))
            else:
                text = fit(printable(_value(column.title, row)), column.width, column.right)
                style = Style()
                if column.title == "state":
                    style = STATE_STYLES.get(row.state, Style())
                elif column.title == "stack" and marked:
                    style = mark_style
                elif column.title == "error":
                    style = Style(color="red") if row.state == "failed" else Style(dim=True)
                segments.append(Segment(text, style))
            segments.append(Segment(" "))
        return Strip(Segment.apply_style(segments, base)).adjust_cell_length(width, base)


class FilterInput(Input):
    """The ``/`` filter: enter keeps it, escape clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_filter", "Clear filter", show=False)
    ]

    class Cleared(Message):
        pass

    def action_clear_filter(self) -> None:
        self.value = ""
        self.post_message(self.Cleared())


class StacksPanel(Panel):
    """View tabs, the filter and the stack table; renders what the screen hands it."""

    DEFAULT_CSS = """
    StacksPanel { height: 2fr; }
    StacksPanel Tabs { height: 2; }
    StacksPanel FilterInput { height: 1; border: none; padding: 0 1; display: none; }
    StacksPanel FilterInput.-shown { display: block; }
    StacksPanel #stacks-status { height: 1; padding: 0 1; color: $text-muted; }
    """

    class QueryChanged(Message):
        def __init__(self, query: StackSelection) -> None:
            super().__init__()
            self.view = query

    def __init__(self, *, id: str | None = "stacks") -> None:
        super().__init__("Stacks: all", id=id)
        self.view = StackSelection()
        self._counts: dict[str, int] = {}
        self._status = ""
        self._status_text: Text | None = None
        self._stale_since: datetime | None = None

    def _title(self) -> None:
        title = f"Stacks: {self.view.state.value if self.view.state else 'all'}"
        if self._stale_since is not None:
            title += f" [stale: as of {self._stale_since:%H:%M:%S}]"
        self.border_title = title

    def show_stale(self, as_of: datetime | None) -> None:
        """dbspica stopped answering: the rows shown are as of ``as_of`` (None: fresh)."""
        if as_of != self._stale_since:
            self._stale_since = as_of
            self._title()

    def compose(self) -> ComposeResult:
        yield Tabs(*(Tab(view_label(state, None), id=view_id(state)) for state in VIEWS))
        yield FilterInput(placeholder="filter: text, or a regex (^$*?()[]{}|\\)", id="filter")
        yield StackTable(id="stack-table")
        yield Static(id="stacks-status")

    @property
    def table(self) -> StackTable:
        return self.query_one(StackTable)

    # -- operator input

    def show_view(self, state: StackState | None) -> None:
        self.query_one(Tabs).active = view_id(state)

    def open_filter(self) -> None:
        box = self.query_one(FilterInput)
        box.add_class("-shown")
        box.focus()

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        name = (event.tab.id or "view-all").removeprefix("view-")
        state = None if name == "all" else StackState(name)
        if state != self.view.state:
            self._change(self.view.with_state(state))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        try:
            query = StackSelection(self.view.state, event.value.strip())
        except UsageError as exc:
            self.show_refusal(str(exc))
            return
        if query != self.view:
            self._change(query)

    def show_refusal(self, message: str) -> None:
        """A filter refused (bad syntax, or dbspica gave up matching it), in the status line."""
        self._status_line(Text(message, "bold red"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            event.input.remove_class("-shown")
        self.table.focus()

    def on_filter_input_cleared(self, event: FilterInput.Cleared) -> None:
        event.stop()
        self.query_one(FilterInput).remove_class("-shown")
        self.table.focus()

    def clear_filter(self) -> bool:
        box = self.query_one(FilterInput)
        if not box.value:
            return False
        box.action_clear_filter()
        return True

    def _change(self, query: StackSelection) -> None:
        self.view = query
        self._title()
        table = self.table
        table.empty_text = "no stack matches the filter" if query.text else "no stacks"
        table.reset()
        self.post_message(self.QueryChanged(query).set_sender(self))

    # -- data in

    def show_page(self, page: StackPage, limit: int | None = None) -> None:
        """Rows of the view; a page shorter than the ``limit`` asked for ends the view, so it
        also says how many stacks the view holds: a selective filter shows its count with
        its rows, without waiting for the count (a scan of every stack) to come back."""
        if page.query != self.view:
            return  # an answer to a view the operator has left
        total = page.total
        ended = limit is not None and len(page.rows) < limit
        if total is None and ended and (page.rows or page.offset == 0):
            total = page.offset + len(page.rows)
        if total is not None:
            self.table.set_total(total)
        self.table.set_window(page.offset, page.rows)
        self._show_status()

    def show_counts(self, query: StackSelection, total: int, per_state: dict[str, int]) -> None:
        if query.with_state(None) != self.view.with_state(None):
            return
        tabs = self.query_one(Tabs)
        all_count = sum(per_state.values())
        for state in VIEWS:
            count = all_count if state is None else per_state.get(state.value, 0)
            tab = tabs.query_one(f"#{view_id(state)}", Tab)
            label = view_label(state, count)
            if tab.label.plain != label.plain:
                tab.label = label
        if query == self.view:
            self.table.set_total(total)
        self._counts = per_state
        self._show_status()

    def show_marks(self, marked: int, hidden: int) -> None:
        text = ""
        if marked:
            text = f"{marked} marked"
            if hidden:
                text += f" ({hidden} hidden by the filter)"
        self._status = text
        self._show_status()

    def _show_status(self) -> None:
        table = self.table
        text = Text()
        total = table.total
        if total is None:
            text.append("counting…")
        elif total:
            text.append(f"row {table.cursor + 1:,} of {total:,}")
        else:
            text.append("no rows")
        if self.view.text:
            kind = "regex" if self.view.is_regex else "text"
            text.append(f"  ·  filter ({kind}): {self.view.text}", "bold")
        if self._status:
            text.append(f"  ·  {self._status}", "bold yellow")
        self._status_line(text)

    def _status_line(self, text: Text) -> None:
        """The status line is one row high whatever it says: a new text repaints it alone,
        without laying the screen out again (on every cursor move)."""
        status = self.query_one("#stacks-status", Static)
        if text != self._status_text:
            self._status_text = text
            status.update(text, layout=False)

    def on_stack_table_cursor_moved(self, event: StackTable.CursorMoved) -> None:
        self._show_status()

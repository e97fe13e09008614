"""Tables drawn a line at a time (Textual's Line API): only the rows and columns on screen
are ever rendered, however many the table holds.

:class:`LineTable` is the machinery every console table shares: a header line, a row cursor
and its keys, a cache of rendered lines keyed by what each shows, repaints of single lines.
:class:`GridTable` holds its rows in memory (the panels: 100 nodes, 40 runids x 100 nodes)
and scrolls sideways with its first columns pinned; the stack table
(:mod:`~spica_tui.console.panels.stacks`) fetches its rows a window at a time.

A stock ``DataTable`` measures and renders every cell it holds, before the first frame and
after each change: 4,000 runid cells cost more than the rest of the first paint together.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = str | Text
Row = tuple[str, Sequence[Cell]]

#: Rendered lines kept; past this the cache starts afresh (a screenful is ~50).
LINE_CACHE = 2000


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    right: bool = False


def fit(value: str, width: int, right: bool = False) -> str:
    """``value`` in exactly ``width`` cells: cut with an ellipsis, padded on its side."""
    if right:
        text = value.rjust(width)
        return text[-width:] if cell_len(text) > width else text
    if cell_len(value) > width and width > 1:
        return set_cell_size(value, width - 1) + "…"
    return set_cell_size(value, width)


class LineTable(ScrollView, can_focus=True):
    """A header line, then one line per row; subclasses say how many rows there are, what a
    row shows (:meth:`row_state`, the cache key) and how it is drawn (:meth:`render_row`)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump('start')", "First", show=False),
        Binding("end", "jump('end')", "Last", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "line-table--header",
        "line-table--cursor",
        "line-table--placeholder",
        "line-table--even",
    }
    DEFAULT_CSS = """
    LineTable {
        background: $surface;
        height: 1fr;
    }
    LineTable > .line-table--header { text-style: bold; background: $panel; color: $foreground; }
    LineTable > .line-table--cursor {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
    }
    LineTable:focus > .line-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    LineTable > .line-table--placeholder { color: $text-muted; }
    LineTable > .line-table--even { background: $surface-darken-1 40%; }
    """

    #: Every other row on a darker background (as a DataTable with zebra stripes).
    zebra = False

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cursor = 0
        self._lines: dict[tuple[object, ...], Strip] = {}

    # -- what subclasses provide

    @property
    def row_count(self) -> int:
        raise NotImplementedError

    def row_state(self, index: int) -> Hashable:
        """Everything row ``index`` shows: its cached line is reused while this is equal."""
        raise NotImplementedError

    def render_row(self, index: int, width: int) -> Strip:
        raise NotImplementedError

    def render_header(self, width: int) -> Strip:
        raise NotImplementedError

    def cursor_moved(self) -> None:
        """The cursor is on another row (subclasses post their message)."""

    def tell(self, message: Message) -> None:
        """Post ``message`` as this table's own, whoever's handler is running: a message
        stops bubbling after the widget it was made under, so one made while the panel or
        the screen hands the table data (a filter change, a fetched window) would never
        reach the screen, and the rows would wait for the next poll."""
        self.post_message(message.set_sender(self))

    # -- geometry

    def _visible_rows(self) -> int:
        return max(1, self.size.height - 1)

    def _resize_virtual(self, width: int | None = None) -> None:
        self.virtual_size = Size(width or self.size.width, self.row_count + 1)

    def forget_lines(self) -> None:
        """Every line is drawn again (new columns or styles)."""
        self._lines.clear()
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines.clear()

    # -- cursor

    def move_to(self, index: int) -> None:
        count = self.row_count
        index = max(0, min(index, count - 1)) if count else 0
        before, self.cursor = self.cursor, index
        height = self._visible_rows()
        top = round(self.scroll_y)
        if index < top:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif index >= top + height:
            self.scroll_to(y=index - height + 1, animate=False, immediate=True)
        self.repaint({before, index})
        if before != index:
            self.cursor_moved()

    def action_move(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * self._visible_rows())

    def action_jump(self, where: str) -> None:
        self.move_to(0 if where == "start" else self.row_count - 1)

    def row_at(self, event: events.Click) -> int | None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return None
        index = round(self.scroll_y) + offset.y - 1
        return index if index < self.row_count else None

    def on_click(self, event: events.Click) -> None:
        index = self.row_at(event)
        if index is not None:
            self.move_to(index)

    # -- rendering

    def repaint(self, indices: Iterable[int]) -> None:
        """Repaint the lines of rows ``indices`` that are on screen."""
        top = round(self.scroll_y)
        height = self._visible_rows()
        for index in indices:
            if top <= index < top + height:
                self.refresh_line(index + 1)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            return self.render_header(width)
        index = round(self.scroll_y) + y - 1
        if index >= self.row_count:
            return self.render_beyond(index, width)
        is_cursor = index == self.cursor
        key = (index, self.row_state(index), is_cursor, self.has_focus, width, self.scroll_x)
        strip = self._lines.get(key)
        if strip is None:
            strip = self.render_row(index, width)
            if self.zebra and index % 2 == 0:
                stripe = self.get_component_rich_style("line-table--even").bgcolor
                strip = Strip(Segment.apply_style(strip, post_style=Style(bgcolor=stripe)))
            if is_cursor:
                strip = Strip(
                    Segment.apply_style(
                        strip, post_style=self.get_component_rich_style("line-table--cursor")
                    )
                )
            if len(self._lines) > LINE_CACHE:
                self._lines.clear()
            self._lines[key] = strip
        return strip

    def render_beyond(self, index: int, width: int) -> Strip:
        """A line below the last row."""
        return Strip.blank(width, self.rich_style)

    def placeholder(self, text: str, width: int) -> Strip:
        style = self.get_component_rich_style("line-table--placeholder")
        return Strip([Segment(text, style)]).adjust_cell_length(width, self.rich_style)


def _cell_text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


class GridTable(LineTable):
    """Rows held in memory, each a key and its cells (text, or rich Text for styles); column
    widths follow the widest cell, and the first ``fixed_columns`` stay put while the rest
    scroll sideways. :meth:`set_rows` repaints only the rows whose cells changed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
    ]
    DEFAULT_CSS = """
    GridTable { overflow-x: auto; overflow-y: auto; }
    """

    def __init__(
        self, *columns: str, fixed_columns: int = 0, zebra: bool = False, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.fixed_columns = fixed_columns
        self.zebra = zebra
        self._titles: tuple[str, ...] = columns
        self._keys: list[str] = []
        self._cells: dict[str, Sequence[Text]] = {}
        #: The cells object each row was given: the same one again is not compared.
        self._given: dict[str, Sequence[Cell]] = {}
        self._widths: dict[str, tuple[int, ...]] = {}
        #: Bumped when a row's cells change: the key of its cached line.
        self._versions: dict[str, int] = {}
        self._version = 0
        self.columns: list[Column] = [Column(t, cell_len(t)) for t in columns]

    # -- data in

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def row_keys(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def get_row(self, key: str) -> Sequence[Text]:
        return self._cells[key]

    def set_columns(self, *titles: str) -> None:
        """New columns: the rows go too (their cells were for the old ones)."""
        self._titles = titles
        self._keys, self._cells, self._given = [], {}, {}
        self._widths, self._versions = {}, {}
        self._layout()

    def set_rows(self, rows: Iterable[Row]) -> None:
        """Show ``rows`` (key, cells) in this order. A row given the very cells object it
        was given last time is not compared (panels keep each row's cells until they change)."""
        keys: list[str] = []
        given: dict[str, Sequence[Cell]] = {}
        cells: dict[str, Sequence[Text]] = {}
        changed: set[int] = set()
        for index, (key, row) in enumerate(rows):
            keys.append(key)
            given[key] = row
            before = self._cells.get(key)
            if before is not None and self._given.get(key) is row:
                cells[key] = before
            else:
                texts = [_cell_text(c) for c in row]
                cells[key] = texts
                self._widths[key] = tuple(t.cell_len for t in texts)
                if before != texts:
                    changed.add(index)
                    self._version += 1
                    self._versions[key] = self._version
            if index >= len(self._keys) or self._keys[index] != key:
                changed.add(index)
        for key in set(self._cells) - set(cells):
            self._widths.pop(key, None)
            self._versions.pop(key, None)
        gone = range(len(keys), len(self._keys))
        self._keys, self._cells, self._given = keys, cells, given
        if self.cursor >= len(keys):
            self.cursor = max(0, len(keys) - 1)
        if self._layout():
            return
        self.repaint(changed | set(gone))

    def _layout(self) -> bool:
        """Column widths from the widest cell; True when they changed (all redrawn)."""
        widths = [cell_len(t) for t in self._titles]
        for row in self._widths.values():
            for i, w in enumerate(row[: len(widths)]):
                if w > widths[i]:
                    widths[i] = w
        columns = [Column(t, w) for t, w in zip(self._titles, widths, strict=True)]
        grown = len(self._keys) + 1 != self.virtual_size.height
        if columns == self.columns and not grown:
            return False
        self.columns = columns
        self._resize_virtual(sum(c.width + 2 for c in columns))
        self.forget_lines()
        return True

    def on_resize(self, event: events.Resize) -> None:
        self._resize_virtual(sum(c.width + 2 for c in self.columns))
        self._lines.clear()

    # -- rendering

    def row_state(self, index: int) -> Hashable:
        key = self._keys[index]
        return (key, self._versions.get(key))

    def render_header(self, width: int) -> Strip:
        style = self.get_component_rich_style("line-table--header")
        titles = [Text(c.title) for c in self.columns]
        return self._line(titles, width, style)

    def render_row(self, index: int, width: int) -> Strip:
        return self._line(self._cells[self._keys[index]], width, self.rich_style)

    def _line(self, cells: Sequence[Text], width: int, base: Style) -> Strip:
        """The pinned columns, then the others from ``scroll_x``: only cells on screen are
        rendered."""
        console = self.app.console
        pinned = self.columns[: self.fixed_columns]
        left = Strip(
            [s for c, t in zip(pinned, cells, strict=False) for s in _cell(console, t, c.width)]
        )
        room = max(0, width - left.cell_length)
        x0 = round(self.scroll_x)
        segments: list[Segment] = []
        x = start = 0
        fixed = self.fixed_columns
        for column, text in zip(self.columns[fixed:], cells[fixed:], strict=False):
            span = column.width + 2
            if x + span <= x0:
                x += span
                start = x
                continue
            if x >= x0 + room:
                break
            segments += _cell(console, text, column.width)
            x += span
        right = Strip(segments).crop(x0 - start, x0 - start + room)
        return Strip(Segment.apply_style(Strip.join([left, right]), base)).adjust_cell_length(
            width, base
        )


def _cell(console: Console, text: Text, width: int) -> list[Segment]:
    """One cell: a space, ``text`` fitted to ``width`` (cut with an ellipsis), a space."""
    fitted = text
    if text.cell_len != width:
        fitted = text.copy()
        if text.cell_len > width:
            fitted.truncate(width, overflow="ellipsis")
        elif text.justify == "right":
            fitted.pad_left(width - text.cell_len)
        else:
            fitted.pad_right(width - text.cell_len)
    return [Segment(" "), *fitted.render(console), Segment(" ")]

"""The footer: the keys the screen and the focused widget offer now, on one line.

Textual's ``Footer`` is a widget per key, composed again each time the offered keys change:
on the dashboard they follow the selected stack (requeue for a failed one, launch for a
pending one...), and each change mounted a dozen widgets, styled them and laid the screen
out again. This one is a single line of text, redrawn in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import events
from textual.widgets import Static

if TYPE_CHECKING:
    from textual.screen import Screen


class KeyBar(Static):
    """Each shown binding as ``key description`` (dimmed while disabled), the command
    palette's key on the right; a click on a key presses it."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "key-bar--key",
        "key-bar--description",
        "key-bar--disabled",
    }
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
        text-wrap: nowrap;
        text-overflow: clip;
    }
    KeyBar > .key-bar--key { color: $footer-key-foreground; text-style: bold; }
    KeyBar > .key-bar--description { color: $footer-description-foreground; }
    KeyBar > .key-bar--disabled { text-style: dim; }
    """

    def __init__(self) -> None:
        super().__init__()
        #: (first cell, last cell + 1, key) of each key shown, for clicks.
        self._spans: list[tuple[int, int, str]] = []
        self._shown: Text | None = None

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._show()

    def on_resize(self, event: events.Resize) -> None:
        self._show()

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if self.is_attached and screen is self.screen:
            self._show()

    def _show(self) -> None:
        key_style = self.get_component_rich_style("key-bar--key", partial=True)
        text_style = self.get_component_rich_style("key-bar--description", partial=True)
        dim = self.get_component_rich_style("key-bar--disabled", partial=True)
        text = Text(no_wrap=True, overflow="crop")
        spans: list[tuple[int, int, str]] = []
        seen: set[str] = set()
        active = self.screen.active_bindings
        for _node, binding, enabled, _tooltip in active.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            start = text.cell_len
            extra = dim if not enabled else None
            text.append(f" {self.app.get_key_display(binding)} ", key_style + extra)
            text.append(f"{binding.description} ", text_style + extra)
            spans.append((start, text.cell_len, binding.key))
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        if palette is not None and self.app.ENABLE_COMMAND_PALETTE:
            binding = palette.binding
            label = Text.assemble(
                ("▏", "dim"),
                (f"{self.app.get_key_display(binding)} ", key_style),
                (f"{binding.description} ", text_style),
            )
            gap = self.size.width - text.cell_len - label.cell_len
            if gap > 0:
                text.append(" " * gap)
                spans.append((text.cell_len, text.cell_len + label.cell_len, binding.key))
                text.append_text(label)
        self._spans = spans
        if text != self._shown:
            self._shown = text
            self.update(text, layout=False)

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self._spans:
            if start <= event.x < end:
                event.stop()
                self.app.simulate_key(key)
                return

"""What the console's read-only screens share (release comparison, data mining): each
snapshot of the poller, and coming back to the screen, read its data again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

from spica_core.console_data import ConsoleSnapshot
from spica_tui.console.panels.header import show_header

if TYPE_CHECKING:
    from spica_tui.console.app import SpicaConsole


class ReadingScreen(Screen[None]):
    """A screen over dbspica only: :meth:`load` reads what it shows (in a worker)."""

    app: SpicaConsole

    def on_mount(self) -> None:
        self.show_snapshot(self.app.poller.snapshot)

    def on_screen_resume(self) -> None:
        self.show_snapshot(self.app.poller.snapshot)

    def show_snapshot(self, snap: ConsoleSnapshot) -> None:
        if show_header(self, snap):
            self.load()

    def load(self) -> None:
        raise NotImplementedError

    def action_back(self) -> None:
        self.app.pop_screen()

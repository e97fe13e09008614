"""What the console's screens over dbspica share (QFin, DataTransfer, a stack's detail,
release comparison, data mining): each snapshot of the poller, and coming back to the
screen, read its data again — one read at a time.

A read asked for while one runs is folded into one more read after it, never a cancel and
restart: a poll faster than the read (a busy dbspica, a node slow to send a log) would
otherwise cancel every read before it showed anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

from spica_core.console_data import ConsoleSnapshot
from spica_tui.console.panels.header import show_header

if TYPE_CHECKING:
    from spica_tui.console.app import SpicaConsole


class ReadingScreen(Screen[None]):
    """A screen whose :meth:`read` fetches and shows what it holds; :meth:`load` runs it."""

    app: SpicaConsole

    def __init__(self) -> None:
        super().__init__()
        self._reading = False
        self._read_again = False

    def on_mount(self) -> None:
        self.show_snapshot(self.app.poller.snapshot)

    def on_screen_resume(self) -> None:
        self.show_snapshot(self.app.poller.snapshot)

    def show_snapshot(self, snap: ConsoleSnapshot) -> None:
        if show_header(self, snap):
            self.load()

    def load(self) -> None:
        """Read now, or once more after the read under way (whose data may be older)."""
        if self._reading:
            self._read_again = True
            return
        self._reading = True
        # Textual's WorkType union: mypy solves its ResultType as Never (not a wrong call).
        self.run_worker(self._reads, group="read", exit_on_error=False)  # type: ignore[arg-type]

    async def _reads(self) -> None:
        try:
            again = True
            while again:
                self._read_again = False
                await self.read()
                again = self._read_again
        finally:
            self._reading = False

    async def read(self) -> None:
        """Fetch this screen's data and show it; failures shown on the screen, not raised."""
        raise NotImplementedError

    def action_back(self) -> None:
        self.app.pop_screen()

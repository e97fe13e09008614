"""The dashboard: every panel, the stacks table and its actions.

The screen composes the panels and hands each snapshot to them; it fetches the stacks
window the table asks for (through the core, in a worker) and turns keys into operations
through the app. It never edits a row after an action: the next snapshot shows the change.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.worker import get_current_worker

from spica_core.console_data import ConsoleSnapshot
from spica_core.errors import UsageError
from spica_core.operations import OpAction
from spica_core.read_model import StackSelection
from spica_core.states import StackState
from spica_tui.console.actions import BY_TEXTUAL, DANGEROUS, bindings
from spica_tui.console.panels._common import Panel
from spica_tui.console.panels.datatransfer import DataTransferPanel
from spica_tui.console.panels.header import HeaderPanel, show_header
from spica_tui.console.panels.key_bar import KeyBar
from spica_tui.console.panels.nodes import NodesPanel
from spica_tui.console.panels.problems import ProblemsPanel
from spica_tui.console.panels.runids import RunidsPanel
from spica_tui.console.panels.stacks import StacksPanel, StackTable
from spica_tui.console.refresh import view_total

if TYPE_CHECKING:
    from spica_tui.console.app import SpicaConsole


class DashboardScreen(Screen[None]):
    SCOPE = "dashboard"
    BINDINGS = bindings("dashboard")
    DEFAULT_CSS = """
    DashboardScreen #top { height: 2fr; }
    DashboardScreen #nodes { width: 3fr; }
    DashboardScreen #side { width: 2fr; }
    DashboardScreen #problems { height: 1fr; min-height: 6; }
    """

    app: SpicaConsole

    def __init__(self) -> None:
        super().__init__()
        self._offered: tuple[bool, ...] | None = None
        #: Per worker group, the arguments of the fetch in flight.
        self._fetching: dict[str, tuple[Hashable, ...]] = {}
        #: Per worker group, the arguments of the last fetch shown and when it started.
        self._fetched: dict[str, tuple[tuple[Hashable, ...], float]] = {}
        self._asked = 0

    def compose(self) -> ComposeResult:
        yield HeaderPanel()
        with Horizontal(id="top"):
            yield NodesPanel(heartbeat_stale=3 * self.app.config.daemon.heartbeat_interval)
            with Vertical(id="side"):
                yield DataTransferPanel()
                yield RunidsPanel()
        yield StacksPanel()
        yield ProblemsPanel()
        yield KeyBar()

    @property
    def stacks(self) -> StacksPanel:
        return self.query_one(StacksPanel)

    def on_mount(self) -> None:
        self.stacks.table.focus()
        self.show_snapshot(self.app.poller.snapshot)

    def on_screen_resume(self) -> None:
        self.show_snapshot(self.app.poller.snapshot)

    # -- snapshots in

    def show_snapshot(self, snap: ConsoleSnapshot) -> None:
        now = self.app.clock()
        with self.app.batch_update():
            if not show_header(self, snap):
                return  # not composed yet, or torn down
            self.query_one(NodesPanel).show(snap, now)
            self.query_one(DataTransferPanel).show(snap, now)
            self.query_one(RunidsPanel).show(snap, now)
            self.query_one(ProblemsPanel).show(snap, now)
        if snap.db is not None and not snap.db_stale:
            self.stacks.show_stale(None)
            # A window or count fetched moments ago (the operator typing a filter) is fresh
            # enough: fetching it again would only slow the next key's. Not for a poll asked
            # for (ctrl+r, or after an operation changed stacks).
            fresh = self.app.poller.interval / 2
            if self._asked != self.app.poller.asked:
                self._asked = self.app.poller.asked
                self._fetched.clear()
            self.fetch_window(fresh=fresh)
            view = self.stacks.view
            if view.with_state(None) == StackSelection():
                # The poll counted every state: an unfiltered view needs no count of its own
                # (over 100,000 stacks, a pass saved each refresh and before the first paint).
                per_state = snap.db.counts
                self.stacks.show_counts(view, view_total(view, per_state), per_state)
                if self.stacks.table.marked:
                    self.fetch_counts(fresh=fresh)
            else:
                self.fetch_counts(fresh=fresh)
        elif snap.db is not None:
            self.stacks.show_stale(snap.db.read_at)
        self._refresh_offer()

    # -- the stacks window: the table asks, a worker fetches through the core

    def on_stack_table_window_wanted(self, message: StackTable.WindowWanted) -> None:
        self.fetch_window(message.offset, message.limit)

    def on_stacks_panel_query_changed(self, message: StacksPanel.QueryChanged) -> None:
        self.fetch_counts()

    def fetch_window(
        self, offset: int | None = None, limit: int | None = None, *, fresh: float = 0.0
    ) -> None:
        table = self.stacks.table
        if offset is None or limit is None:
            height = max(1, table.size.height - 1)
            offset, limit = max(0, round(table.scroll_y) - height), 3 * height
        args = (self.stacks.view, offset, limit)
        self._fetch("stacks-window", self._load_window, *args, fresh=fresh)

    async def _load_window(self, query: StackSelection, offset: int, limit: int) -> None:
        try:
            page = await self.app.backend.page(query, offset, limit, with_total=False)
        except UsageError as exc:  # a regex dbspica gave up on or stopped: said, not raised
            self.stacks.show_refusal(str(exc))
            return
        if not get_current_worker().is_cancelled:
            self.stacks.show_page(page, limit)
            # The selected row may be new (first page, or its state changed): re-offer.
            self._refresh_offer()

    def fetch_counts(self, *, fresh: float = 0.0) -> None:
        marked = frozenset(self.stacks.table.marked)
        self._fetch("stacks-counts", self._load_counts, self.stacks.view, marked, fresh=fresh)

    async def _load_counts(self, query: StackSelection, marked: frozenset[str]) -> None:
        try:
            total, per_state = await self.app.backend.counts(query)
            visible = await self.app.backend.visible_count(query, marked)
        except UsageError as exc:
            self.stacks.show_refusal(str(exc))
            return
        if get_current_worker().is_cancelled:
            return
        self.stacks.show_counts(query, total, per_state)
        self.stacks.show_marks(len(marked), len(marked) - visible)

    def _fetch(
        self,
        group: str,
        load: Callable[..., Awaitable[None]],
        *args: Hashable,
        fresh: float = 0.0,
    ) -> None:
        """Run ``load(*args)`` in the group's worker, replacing one for other arguments but
        never one still fetching the same: a regex count over 100,000 stacks can outlast the
        poll interval, and a poll restarting it each time (its thread running on) would
        never let it finish. Nor when the same arguments were fetched (and shown) less than
        ``fresh`` seconds ago."""
        if self._fetching.get(group) == args:
            return
        done = self._fetched.get(group)
        if fresh and done is not None and done[0] == args and time.monotonic() - done[1] < fresh:
            return
        self._fetching[group] = args

        async def fetch() -> None:
            started = time.monotonic()
            try:
                await load(*args)
                self._fetched[group] = (args, started)
            finally:
                if self._fetching.get(group) == args:
                    del self._fetching[group]

        # Textual's WorkType union: mypy solves its ResultType as Never (not a wrong call).
        self.run_worker(fetch, group=group, exclusive=True, exit_on_error=False)  # type: ignore[arg-type]

    # -- what is offered

    def _offer(self, action: str) -> bool:
        """Marked stacks: every action is offered (the plan refuses per stack); else the
        selected stack's node must answer and its state allow the move."""
        table = self.stacks.table
        if table.marked:
            return self.app.offers(action, None)
        row = table.selected
        if row is None:
            return False
        return self.app.offers(action, row.node, row.state)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        entry = BY_TEXTUAL.get(action)
        if entry is None or not entry.dangerous:
            return True
        return self._offer(entry.name)

    def _refresh_offer(self) -> None:
        offered = tuple(self._offer(name) for name in sorted(DANGEROUS))
        if offered != self._offered:
            self._offered = offered
            self.refresh_bindings()

    def on_stack_table_cursor_moved(self, message: StackTable.CursorMoved) -> None:
        """The footer follows the cursor: it is one line of text (:class:`KeyBar`), redrawn
        only when the selected row offers other keys."""
        self._refresh_offer()

    def on_stack_table_opened(self, message: StackTable.Opened) -> None:
        self.app.open_stack(message.row.name)

    # -- actions (names from the registry)

    def action_filter(self) -> None:
        self.stacks.open_filter()

    def action_view(self, state: str) -> None:
        self.stacks.show_view(StackState(state) if state else None)

    def action_mark(self) -> None:
        table = self.stacks.table
        if table.toggle_mark() is not None:
            table.action_move(1)
            self.fetch_counts()
            self._refresh_offer()

    def action_clear_marks(self) -> None:
        self.stacks.table.clear_marks()
        self.stacks.show_marks(0, 0)
        self._refresh_offer()

    def action_detail(self) -> None:
        row = self.stacks.table.selected
        if row is not None:
            self.app.open_stack(row.name)

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        focused = self.focused
        panel = (
            next((a for a in focused.ancestors if isinstance(a, Panel)), None) if focused else None
        )
        if panel is not None:
            self.maximize(panel, container=False)

    def _operate(self, action: OpAction) -> None:
        table = self.stacks.table
        if table.marked:
            names = tuple(sorted(table.marked))
            self.app.start_operation(action, names, view=self.stacks.view, marked=True)
        elif table.selected is not None:
            self.app.start_operation(action, (table.selected.name,))
        else:
            self.app.notify("No stack selected.", severity="warning")

    def action_launch(self) -> None:
        self._operate(OpAction.LAUNCH)

    def action_requeue(self) -> None:
        self._operate(OpAction.REQUEUE)

    def action_unlock(self) -> None:
        self._operate(OpAction.UNLOCK)

    def action_remove(self) -> None:
        self._operate(OpAction.REMOVE)

    def operation_done(self, applied: set[str]) -> None:
        """The app calls this after an apply: applied stacks are no longer marked."""
        table = self.stacks.table
        if table.marked & applied:
            table.marked -= applied
            table.refresh()
        self.fetch_counts()

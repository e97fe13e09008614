"""The SPICA operations console: ``spica console [--read-only]``.

The App owns the model (:class:`~spica_tui.console.refresh.Poller` over a
:class:`~spica_tui.console.refresh.ConsoleBackend`), hands each snapshot to the screens, and
runs operator actions: plan through the operations API, show the plan in a
:class:`~spica_tui.console.modals.ConfirmPlan`, apply, notify each stack's result, poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from textual.app import App, SystemCommand
from textual.notifications import SeverityLevel
from textual.screen import Screen

from spica_core.config import SpicaConfig
from spica_core.errors import SpicaError
from spica_core.operations import (
    ItemResult,
    OpAction,
    OperationRequest,
    Outcome,
    Selection,
    operator_name,
)
from spica_core.read_model import StackSelection
from spica_core.text import printable
from spica_tui.console.actions import SpicaCommands, allowed, bindings, keymap
from spica_tui.console.modals import ConfirmPlan
from spica_tui.console.panels.header import show_header
from spica_tui.console.qfin_backend import QfinBackend
from spica_tui.console.refresh import Clock, ConsoleBackend, Poller, describe_failure, utc_now
from spica_tui.console.results_backend import ResultsBackend
from spica_tui.console.screens.compare import CompareScreen
from spica_tui.console.screens.dashboard import DashboardScreen
from spica_tui.console.screens.datatransfer import DataTransferScreen
from spica_tui.console.screens.help import HelpScreen
from spica_tui.console.screens.mining import MiningScreen
from spica_tui.console.screens.qfin import QfinScreen
from spica_tui.console.screens.stack_detail import StackDetailScreen
from spica_tui.console.transfer_backend import TransferBackend
from spica_tui.console.transfer_now import TransferNow

#: Results shown one notification each; more are summed up in one.
MAX_RESULT_NOTES = 6


class SpicaConsole(App[None]):
    TITLE = "SPICA"
    CSS_PATH = "console.tcss"
    SCOPE = "app"
    BINDINGS = bindings("app")
    COMMANDS = App.COMMANDS | {SpicaCommands}
    ENABLE_COMMAND_PALETTE = True

    def __init__(
        self,
        config: SpicaConfig,
        backend: ConsoleBackend,
        *,
        clock: Clock = utc_now,
        operator: str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backend = backend
        self.clock = clock
        self.operator = operator or operator_name()
        self.remapped_keys, self._unknown_keys = keymap(config.console.keys)
        self.poller = Poller(self, backend, config.console.refresh_interval, self._on_snapshot)
        self._operating = False
        self.transfers = TransferBackend(backend)
        self.qfin = QfinBackend(backend)
        self.results = ResultsBackend(backend)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notification is plain text: results and errors carry stack, node and
        command text, which must neither be read as markup nor reach the terminal with its
        control characters (``markup`` is ignored)."""
        super().notify(
            printable(message, lines=True),
            title=printable(title),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    @property
    def read_only(self) -> bool:
        """Read-only is the backend's: built without an operations API (``--read-only``)."""
        return self.backend.read_only

    # -- life cycle

    def on_mount(self) -> None:
        if self.remapped_keys:
            self.set_keymap(self.remapped_keys)
        if self._unknown_keys:
            self.notify(
                f"{self.config.source}: [console].keys: unknown action(s) "
                f"{', '.join(self._unknown_keys)} (see ? for the names)",
                severity="warning",
                timeout=15,
            )
        theme = self.config.console.theme
        if theme:
            if theme in self.available_themes:
                self.theme = theme
            else:
                self.notify(f"[console].theme: no theme named {theme!r}", severity="warning")
        self.push_screen(DashboardScreen())
        self.poller.start()
        self.set_interval(1.0, self._tick, name="spica-header-clock")

    async def on_unmount(self) -> None:
        self.poller.stop()
        await self.backend.close()

    def _on_snapshot(self, snapshot: object) -> None:
        for screen in self.screen_stack:
            show = getattr(screen, "show_snapshot", None)
            if show is not None:
                show(snapshot)

    def _tick(self) -> None:
        """Once a second the header's ages move on: a stalled poll shows as stale. A tick
        can still fire while the app shuts down, after its last screen is gone."""
        if self.screen_stack:
            show_header(self.screen)

    # -- what is offered

    def offers(self, action: str, node: str | None, state: str | None = None) -> bool:
        """Dangerous actions need write access and a reachable node (k9s's gate), and for
        one stack a state they apply to."""
        reachable = node is None or self.poller.snapshot.reachable(node)
        return allowed(action, read_only=self.read_only, reachable=reachable, state=state)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Refresh", "Poll the nodes and dbspica now", self.action_refresh)

    # -- app actions (names from the registry)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.remapped_keys, read_only=self.read_only))

    def action_refresh(self) -> None:
        self.poller.poll_now()

    def open_stack(self, name: str) -> None:
        self.push_screen(StackDetailScreen(name))

    def action_datatransfer(self) -> None:
        if not isinstance(self.screen, DataTransferScreen):
            self.push_screen(DataTransferScreen())

    def action_qfin(self) -> None:
        if not isinstance(self.screen, QfinScreen):
            self.push_screen(QfinScreen())

    def action_compare(self) -> None:
        if not isinstance(self.screen, CompareScreen):
            self.push_screen(CompareScreen())

    def action_mining(self) -> None:
        if not isinstance(self.screen, MiningScreen):
            self.push_screen(MiningScreen())

    def transfer_now(self, runid: str) -> None:
        """Plan (shown, Cancel by default), store and copy ``runid`` in an app worker: the
        copy goes on when the operator leaves the screen."""
        if not allowed("transfer_now", read_only=self.read_only):
            self.notify(f"transfer {runid}: read-only console", severity="warning")
            return
        flow = TransferNow(self, runid)
        # Textual's WorkType union: mypy solves its ResultType as Never (not a wrong call).
        self.run_worker(flow.run, name=f"transfer-{runid}", group="transfer", exit_on_error=False)  # type: ignore[arg-type]

    # -- operations: plan, confirm, apply, report

    def start_operation(
        self,
        action: OpAction,
        names: tuple[str, ...],
        *,
        view: StackSelection | None = None,
        marked: bool = False,
    ) -> None:
        if not allowed(action.value, read_only=self.read_only):
            self.notify(f"{action}: read-only console", severity="warning")
            return
        if self._operating:
            self.notify("An operation is under way; wait for its results.", severity="warning")
            return
        self._operating = True
        # Textual's WorkType union: mypy solves its ResultType as Never (not a wrong call).
        self.run_worker(
            partial(self._operate, action, names, view, marked),  # type: ignore[arg-type]
            name=f"operation-{action}",
            group="operation",
            exit_on_error=False,
        )

    async def _operate(
        self, action: OpAction, names: tuple[str, ...], view: StackSelection | None, marked: bool
    ) -> None:
        try:
            request = OperationRequest(action, Selection(names=names), user=self.operator)
            try:
                plan = await self.backend.plan(request)
                hidden = 0
                if marked and view is not None:
                    hidden = len(names) - await self.backend.visible_count(view, frozenset(names))
            except SpicaError as exc:
                self.notify(str(exc), title=f"{action}: not planned", severity="error")
                return
            except Exception as exc:  # dbspica away while planning
                self.notify(describe_failure(exc), title=f"{action}: not planned", severity="error")
                return
            modal = ConfirmPlan(plan, marked=len(names) if marked else 0, hidden=hidden)
            if not await self.push_screen_wait(modal):
                self.notify("Cancelled: nothing changed.", title=action.value.capitalize())
                return
            results: list[ItemResult] = []

            def note(result: ItemResult) -> None:
                results.append(result)
                if len(plan.items) <= MAX_RESULT_NOTES or not result.ok:
                    self._notify_result(action, result)

            await self.backend.apply(plan, note)
            if len(plan.items) > MAX_RESULT_NOTES:
                done = sum(1 for r in results if r.ok)
                self.notify(
                    f"{done} of {len(results)} stacks done",
                    title=action.value.capitalize(),
                    severity="information" if done == len(results) else "warning",
                )
            applied = {r.stack for r in results if r.outcome is Outcome.APPLIED}
            for screen in self.screen_stack:
                done_hook = getattr(screen, "operation_done", None)
                if done_hook is not None:
                    done_hook(applied)
            self.poller.poll_now()
        finally:
            self._operating = False

    def _notify_result(self, action: OpAction, result: ItemResult) -> None:
        severity: SeverityLevel = (
            "information"
            if result.ok
            else "warning"
            if result.outcome is Outcome.REFUSED
            else "error"
        )
        self.notify(
            f"{result.stack}: {result.message}",
            title=f"{action.value.capitalize()}: {result.outcome.value}",
            severity=severity,
            timeout=8 if result.ok else 20,
        )

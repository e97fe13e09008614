"""The console's "transfer this runid now", one run of it: plan (dry run) -> confirmation
(Cancel by default) -> the plan stored -> the copy -> a notification of the outcome.

The calls are :mod:`spica_core.transfer.now`'s, the ones behind ``spica transfer plan`` and
``spica transfer run``. The plan stored is compared with the plan shown: if the disks
changed in between and the placement differs, the new plan stays stored (``planned``) but
nothing is copied, and the operator is told to look again.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from spica_core.errors import SpicaError
from spica_core.transfer import copy_rows
from spica_core.transfer.now import describe, same_placement
from spica_core.units import human_bytes
from spica_tui.console.refresh import describe_failure
from spica_tui.console.screens.datatransfer import rate
from spica_tui.console.transfer_modal import ConfirmTransfer

if TYPE_CHECKING:
    from spica_tui.console.app import SpicaConsole

T = TypeVar("T")


class TransferNow:
    def __init__(self, app: SpicaConsole, runid: str) -> None:
        self.app = app
        self.runid = runid
        self.title = f"Transfer {runid} now"

    def _fail(self, message: str) -> None:
        self.app.notify(message, title=self.title, severity="error", timeout=20)

    async def _core(self, call: Awaitable[T]) -> T | None:
        """The core call's answer; None once its refusal (or dbspica's absence) is shown."""
        try:
            return await call
        except SpicaError as exc:
            self._fail(str(exc))
        except Exception as exc:  # dbspica away while planning
            self._fail(describe_failure(exc))
        return None

    async def run(self) -> None:
        app, runid = self.app, self.runid
        transfers = app.transfers
        if runid in transfers.copying:
            app.notify(f"{runid} is being copied already.", title=self.title, severity="warning")
            return
        cluster = app.poller.snapshot.cluster
        if cluster is None:
            app.notify("No disk figures yet: wait for the first poll.", severity="warning")
            return
        shown = await self._core(transfers.preview(cluster, runid, app.operator))
        if shown is None:
            return
        if not await app.push_screen_wait(ConfirmTransfer(shown)):
            app.notify("Cancelled: nothing changed.", title=self.title)
            return
        stored = await self._core(transfers.plan(cluster, runid, app.operator))
        if stored is None:
            return
        if not stored.stored:
            self._fail(f"not planned: {describe(stored)}")
            return
        if not same_placement(stored, shown.plan):
            app.notify(
                "The disks changed since the plan was shown: the new plan is stored, nothing "
                f"is copied. Press n again to see it.\n{describe(stored)}",
                title=self.title,
                severity="warning",
                timeout=20,
            )
            app.poller.poll_now()
            return
        app.notify(f"{len(stored.files)} file(s) planned; copying", title=self.title)
        app.poller.poll_now()
        try:
            report = await transfers.copy(runid)
        except Exception as exc:  # dbspica or the node loop gone: the rows say the rest
            self._fail(f"copy stopped: {describe_failure(exc)}")
            app.poller.poll_now()
            return
        done = report.count(copy_rows.DONE)
        seconds = max(report.seconds, 1e-9)
        app.notify(
            f"{done} of {len(report.files)} file(s) transferred, "
            f"{report.count(copy_rows.FAILED)} failed, "
            f"{report.count(copy_rows.INTERRUPTED)} interrupted; {human_bytes(report.bytes)} in "
            f"{report.seconds:.1f} s ({rate(report.bytes / seconds)})",
            title=self.title,
            severity="information" if report.ok else "error",
            timeout=10 if report.ok else 30,
        )
        app.poller.poll_now()

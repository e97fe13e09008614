"""``spica transfer watch``: the seed's automatic DataTransfer, on a schedule.

Each round: files new in the repositories are ingested through the injected scanning step,
the runids waiting there (images there, not yet on a node) are planned through the injected
planning step (both in :mod:`spica_core.transfer.automatic`), then every runid with planned
or interrupted rows is copied (:class:`~spica_core.transfer.copy.CopyRun`) — runids whose
transfer mode is ``immediate`` first, then by name. Failed rows are left to operators
(``spica transfer run``). Rounds never overlap: the next starts ``interval`` seconds after one ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, case, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig
from spica_core.db.models import Runid, Transfer
from spica_core.db.types import utcnow
from spica_core.executor.base import FileCopier
from spica_core.read_model.transfer import runids_to_plan
from spica_core.transfer import copy_rows
from spica_core.transfer.copy import DEFAULT_STALE_AFTER, CopyRun, FileEvent, RunReport

log = logging.getLogger(__name__)

#: Plans one runid's files onto nodes (writes ``planned`` rows); the number of rows planned.
PlanStep = Callable[[str], Awaitable[int]]
#: Ingests what is new in the repositories.
ScanStep = Callable[[], Awaitable[object]]
IMMEDIATE = "immediate"


def runids_to_copy(engine: Engine, stale_before: datetime) -> list[str]:
    """Runids with rows the watch copies, ``immediate`` ones first."""
    with Session(engine) as session:
        mode = select(Runid.transfer_mode).where(Runid.name == Transfer.runid).scalar_subquery()
        first = case((mode == IMMEDIATE, 0), else_=1)
        query = (
            select(Transfer.runid, first)
            .where(
                copy_rows.runnable(copy_rows.WATCH_STATES, stale_before),
                Transfer.runid.is_not(None),
            )
            .distinct()
        )
        rows = sorted(session.execute(query).all(), key=lambda r: (r[1], r[0]))
        return [r[0] for r in rows]


class TransferWatch:
    """Rounds of plan-then-copy until :meth:`stop` (safe from a signal handler)."""

    def __init__(
        self,
        config: SpicaConfig,
        engine: Engine,
        copier: FileCopier,
        *,
        plan: PlanStep | None = None,
        scan: ScanStep | None = None,
        interval: float | None = None,
        stale_after: float = DEFAULT_STALE_AFTER,
        on_event: Callable[[FileEvent], None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.copier = copier
        self.plan = plan
        self.scan = scan
        self.interval = interval if interval is not None else config.transfer.interval
        self.stale_after = stale_after
        self.on_event = on_event
        self._stop = asyncio.Event()
        self._run: CopyRun | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._run is not None:
            self._run.stop()

    async def round(self) -> list[RunReport]:
        """Scan, plan what waits, then copy runid after runid (immediate first)."""
        if self.scan is not None:
            try:
                await self.scan()
            except Exception as exc:  # a repository unreadable this round: copy all the same
                log.warning("scan of the repositories failed: %s", exc)
        if self.plan is not None:
            for runid in await asyncio.to_thread(runids_to_plan, self.engine):
                if self._stop.is_set():
                    return []
                try:
                    planned = await self.plan(runid)
                except Exception as exc:  # one runid's plan never stops the others
                    log.warning("plan of %s failed: %s", runid, exc)
                    continue
                if planned:
                    log.info("planned %d files of %s", planned, runid)
        stale_before = utcnow() - timedelta(seconds=self.stale_after)
        reports: list[RunReport] = []
        for runid in await asyncio.to_thread(runids_to_copy, self.engine, stale_before):
            if self._stop.is_set():
                break
            self._run = CopyRun(
                self.config,
                self.engine,
                self.copier,
                stale_after=self.stale_after,
                on_event=self.on_event,
            )
            report = await self._run.run(runid, states=copy_rows.WATCH_STATES)
            self._run = None
            log.info(
                "%s: %d done, %d failed, %d interrupted",
                runid,
                report.count(copy_rows.DONE),
                report.count(copy_rows.FAILED),
                report.count(copy_rows.INTERRUPTED),
            )
            reports.append(report)
        return reports

    async def run(self, *, once: bool = False, handle_signals: bool = False) -> int:
        """Rounds until stopped (or one); 0 when it stopped cleanly."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        try:
            while not self._stop.is_set():
                await self.round()
                if once:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return 0

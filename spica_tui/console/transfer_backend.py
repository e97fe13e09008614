"""The DataTransfer screen's core calls, over the console's backend: its engine, its
configuration, and its executor on the node loop (the connections the dashboard polls).

Reads run in a thread; a copy runs on the node loop, where the pool lives. A read-only
backend (no operations API) refuses to plan or copy: the screen does not offer it either.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.console_transfer import TransferView, read_transfer_view
from spica_core.errors import SpicaError
from spica_core.transfer.copy import RunReport
from spica_core.transfer.now import NowPlan, copy_now, plan_now, preview
from spica_core.transfer.store import RunidPlan
from spica_tui.console.refresh import ConsoleBackend


class TransferBackend:
    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend
        #: Runids this console is copying now (one "transfer now" per runid at a time).
        self.copying: set[str] = set()

    async def view(self, cluster: ClusterSnapshot | None, now: datetime) -> TransferView:
        b = self.backend
        return await asyncio.to_thread(
            read_transfer_view, b.engine, b.config, cluster, now, b.scope
        )

    def _writable(self) -> None:
        if self.backend.read_only:
            raise SpicaError("this console is read-only: it transfers nothing")

    async def preview(self, cluster: ClusterSnapshot, runid: str, user: str) -> NowPlan:
        self._writable()
        b = self.backend
        return await asyncio.to_thread(preview, b.engine, b.config, cluster, runid, user)

    async def plan(self, cluster: ClusterSnapshot, runid: str, user: str) -> RunidPlan:
        self._writable()
        b = self.backend
        return await asyncio.to_thread(plan_now, b.engine, b.config, cluster, runid, user)

    async def copy(self, runid: str) -> RunReport:
        self._writable()
        b = self.backend
        self.copying.add(runid)
        try:
            return await b.nodes.run(copy_now(b.config, b.engine, b.executor, runid))
        finally:
            self.copying.discard(runid)

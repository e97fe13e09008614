"""The core calls of the stack results, the release comparison and the data-mining screens,
over the console's backend: its engine and scope for dbspica (in a thread), its executor on
the node loop for a thumbnail (read where the stack ran, like the log tail)."""

from __future__ import annotations

import asyncio

from spica_core.console_thumbnail import Thumbnail, fetch_thumbnail
from spica_core.read_model.compare import ReleaseComparison, compare_releases, stack_releases
from spica_core.read_model.mining import MiningView, mining_view
from spica_tui.console.refresh import ConsoleBackend


class ResultsBackend:
    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend

    async def thumbnail(self, stack: str, node: str | None, path: str | None) -> Thumbnail:
        b = self.backend
        if path is None and b.scope.hides_node_internals:
            return Thumbnail(stack, None, None, error="thumbnail not shown in this scope")
        return await b.nodes.run(fetch_thumbnail(b.executor, stack, node, path))

    async def releases(self) -> list[str]:
        b = self.backend
        return await asyncio.to_thread(stack_releases, b.engine, b.scope)

    async def compare(self, release: str, against: str) -> ReleaseComparison:
        b = self.backend
        return await asyncio.to_thread(
            lambda: compare_releases(
                b.engine, release, against, scope=b.scope, require_stacks=False
            )
        )

    async def mining(self) -> MiningView:
        b = self.backend
        return await asyncio.to_thread(mining_view, b.engine, b.scope)

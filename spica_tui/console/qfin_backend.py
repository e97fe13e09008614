"""The QFin screen's core calls, over the console's backend: its engine, its scope and its
operator.

Every call runs in a thread (dbspica only: the units' logs are read by the stack detail
screen through the executor). A read-only backend refuses to grade: the screen does not
offer it either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from spica_core.errors import SpicaError
from spica_core.qfin.grading import GradeOutcome, grade_images
from spica_core.read_model.images import ImageQuery, ImageRow, list_images
from spica_core.read_model.qfin import QfinView, qfin_units, qfin_view
from spica_tui.console.refresh import ConsoleBackend

#: Images a search shows at most (the table says when there may be more).
SEARCH_LIMIT = 1000


class QfinBackend:
    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend

    async def view(self, runid: str | None, now: datetime) -> QfinView:
        b = self.backend
        return await asyncio.to_thread(qfin_view, b.engine, now, runid, b.scope)

    async def search(self, query: ImageQuery) -> list[ImageRow]:
        """The first :data:`SEARCH_LIMIT` images ``query`` finds, within the console's
        scope (the query's own is replaced: the console says who is reading, not the form)."""
        b = self.backend
        scoped = replace(query, scope=b.scope)
        return await asyncio.to_thread(list_images, b.engine, scoped, SEARCH_LIMIT)

    async def units(self, images: Sequence[str]) -> dict[str, str]:
        b = self.backend
        return await asyncio.to_thread(qfin_units, b.engine, images, b.scope)

    async def grade(
        self, images: Sequence[str], grade: str, *, comment: str | None, user: str
    ) -> GradeOutcome:
        """The operator's grade of ``images``, all or nothing, audited as ``user``."""
        b = self.backend
        if b.read_only or not b.scope.everything:
            raise SpicaError("this console is read-only: it grades nothing")
        return await asyncio.to_thread(
            grade_images, b.engine, tuple(images), grade, comment=comment, user=user
        )

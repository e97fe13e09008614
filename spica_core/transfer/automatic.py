"""The seed's automatic DataTransfer mode: the steps ``spica transfer watch`` runs each round.

*Scan*: files new in the repositories are ingested (a file whose image row, by name, records
its size is not read again: ingestion reads every byte for its checksum; and ingestion leaves
an image placed on a node where it is while the repository holds the same bytes).
*Plan*: a runid waiting there is placed on the nodes with the same call as ``spica transfer
plan``, over the monitor's fresh figures or a poll through the executor. The copying is
:class:`~spica_core.transfer.watch.TransferWatch`'s own.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig
from spica_core.db.models import Image
from spica_core.executor.base import Executor
from spica_core.ingest.fitsscan import image_filename
from spica_core.ingest.service import IngestReport, ingest_paths
from spica_core.ingest.walk import walk_paths
from spica_core.transfer.disks import monitor_figures
from spica_core.transfer.store import plan_runid

log = logging.getLogger(__name__)

#: The operator name automatic plans are audited under.
AUTOMATIC_USER = "spica-transfer-watch"


def known_files(engine: Engine, paths: Sequence[str]) -> set[str]:
    """Of ``paths``, those whose image row (by name) records the file's present size: not
    read again. A placed image is known too; its repository copy is left alone."""
    names = {image_filename(os.path.basename(p)): p for p in paths}
    with Session(engine) as session:
        rows = session.execute(
            select(Image.filename, Image.bytes).where(
                Image.filename.in_([n for n in names if n is not None])
            )
        ).all()
    known: set[str] = set()
    for filename, size in rows:
        local = names[filename]
        try:
            if os.stat(local).st_size == size:
                known.add(local)
        except OSError:
            continue
    return known


def new_repository_files(engine: Engine, config: SpicaConfig) -> list[str]:
    """Files in the repositories on this host that dbspica does not hold as they are."""
    here = [r.path for r in config.transfer.repositories if r.node is None]
    if not here:
        return []
    files = walk_paths(here).files
    known = known_files(engine, files)
    return [f for f in files if f not in known]


def scan_step(
    config: SpicaConfig, engine: Engine, executor: Executor
) -> Callable[[], Awaitable[IngestReport | None]]:
    """Ingest what is new in the repositories (on nodes: the whole repository, read there)."""

    async def scan() -> IngestReport | None:
        paths = await asyncio.to_thread(new_repository_files, engine, config)
        paths += [r.path for r in config.transfer.repositories if r.node is not None]
        if not paths:
            return None
        report = await ingest_paths(engine, config, paths, executor=executor)
        if report.ingested or report.skipped:
            log.info(
                "repositories: %d added, %d updated, %d skipped",
                report.count("added"),
                report.count("updated"),
                len(report.skipped),
            )
        for skipped in report.skipped:
            log.warning("%s: %s", skipped.path, skipped.reason)
        return report

    return scan


def plan_step(
    config: SpicaConfig, engine: Engine, executor: Executor, *, user: str = AUTOMATIC_USER
) -> Callable[[str], Awaitable[int]]:
    """Plan one waiting runid as ``spica transfer plan`` does; the number of files planned."""

    async def plan(runid: str) -> int:
        figures = await asyncio.to_thread(monitor_figures, engine, config)
        cluster = figures.cluster if figures is not None else await executor.snapshot()
        outcome = await asyncio.to_thread(plan_runid, engine, config, cluster, runid, user=user)
        if not outcome.stored and outcome.plan.shortfall is not None:
            log.warning("%s: %s", runid, outcome.plan.shortfall.message())
        return len(outcome.files) if outcome.stored else 0

    return plan

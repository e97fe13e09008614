"""Planned transfer rows and source files for the copy tests (the planner's output, by hand)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.checksum import file_checksum
from spica_core.db.models import Image, Runid, Transfer


@dataclass(frozen=True)
class Planned:
    row: int
    filename: str
    source: Path
    node: str
    path: str  # relative to the node's root


def make_sources(repository: Path, count: int, size: int, prefix: str = "8052") -> list[Path]:
    """``count`` files of random bytes (``size`` each, the last one a bit shorter)."""
    repository.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = repository / f"{prefix}{i:02d}p.fits"
        path.write_bytes(os.urandom(size - 7 * i))
        files.append(path)
    return files


def plan(
    engine: Engine,
    runid: str,
    sources: list[Path],
    nodes: list[str],
    *,
    roots: dict[str, str] | None = None,
    partition: str = "raid1",
    filter: str = "r",
) -> list[Planned]:
    """``planned`` rows spreading ``sources`` over ``nodes`` (image rows in a repository);
    with ``roots``, destination paths are written absolute (as the planner may)."""
    planned: list[Planned] = []
    with Session(engine) as session, session.begin():
        run = session.scalar(select(Runid).where(Runid.name == runid))
        if run is None:
            run = Runid(name=runid, images=len(sources))
            session.add(run)
            session.flush()
        for i, source in enumerate(sources):
            node = nodes[i % len(nodes)]
            rel = f"{partition}/{runid}/{source.name}"
            image = Image(
                filename=source.name,
                runid_id=run.id,
                filter=filter,
                repository="incoming",
                path=str(source),
                bytes=source.stat().st_size,
                checksum=file_checksum(source)[0],
            )
            session.add(image)
            session.flush()
            dest = f"{roots[node].rstrip('/')}/{rel}" if roots else rel
            row = Transfer(
                filename=source.name,
                runid=runid,
                source=str(source),
                destination_node=node,
                destination_partition=partition,
                destination_path=dest,
                bytes=source.stat().st_size,
                checksum=image.checksum,
                image_id=image.id,
                filter=filter,
                plan_id="p1",
            )
            session.add(row)
            session.flush()
            planned.append(Planned(row.id, source.name, source, node, rel))
    return planned


def rows(engine: Engine, runid: str) -> dict[str, Transfer]:
    with Session(engine) as session:
        found = session.scalars(select(Transfer).where(Transfer.runid == runid))
        return {t.filename: t for t in found}


def partials(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.spica-part"))

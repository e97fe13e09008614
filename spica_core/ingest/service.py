"""A batch of ingestion: paths -> locations -> scanned files -> records -> dbspica.

Every file is judged on its own: one that is not FITS, is cut short, lacks a required key or
holds an unparseable value is reported (path, key, reason) and skipped before anything of it
is written; the batch goes on. Good records are written in transactions of
:data:`TRANSACTION_FILES`, each with its runids' totals.

Where files live decides what their row says: under a configured repository
(``[[transfer.repositories]]``) the row names the repository (and its node, if the
repository is on one); elsewhere the operator names the node (and partition) with
``--node``/``--partition``, and the files are read there by the node's agent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from spica_core.config import SpicaConfig
from spica_core.db.engine import session_scope, unavailable_raised
from spica_core.errors import UsageError
from spica_core.ingest.fitsscan import FitsFormatError, ScannedFits, scan_file
from spica_core.ingest.header_map import HeaderMap, shipped_maps
from spica_core.ingest.record import HeaderRejected, ImageRecord, read_record
from spica_core.ingest.walk import walk_paths
from spica_core.ingest.writer import Outcome, RunidTotals, write_records

TRANSACTION_FILES = 500

#: A file's scan: what it holds, or why it could not be read (a reason).
ScanAnswer = ScannedFits | str
#: ``progress(done, total)`` after each file.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Location:
    """Where a batch's files live, as the image rows will say."""

    node: str | None = None
    partition: str | None = None
    repository: str | None = None


@dataclass(frozen=True)
class Skipped:
    path: str
    key: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "key": self.key, "reason": self.reason}


@dataclass(frozen=True)
class Ingested:
    path: str
    filename: str
    runid: str
    filter: str
    outcome: Outcome

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class IngestReport:
    ingested: list[Ingested] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    runids: dict[str, RunidTotals] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for i in self.ingested if i.outcome == outcome)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.count("added"),
            "updated": self.count("updated"),
            "unchanged": self.count("unchanged"),
            "skipped": [s.to_json() for s in self.skipped],
            "files": [i.to_json() for i in self.ingested],
            "runids": [t.to_json() for _, t in sorted(self.runids.items())],
        }


def repository_location(config: SpicaConfig, path: str) -> Location | None:
    """The repository holding ``path`` (absolute), as a location; None if none does."""
    real = os.path.realpath(path)
    for repo in config.transfer.repositories:
        for base in {repo.path, os.path.realpath(repo.path)}:
            if (
                real == base
                or real.startswith(base.rstrip("/") + "/")
                or (path == base or path.startswith(base.rstrip("/") + "/"))
            ):
                return Location(node=repo.node, repository=repo.name)
    return None


def local_location(config: SpicaConfig, path: str) -> Location:
    """Where a path on this host lives; a UsageError if it is under no repository."""
    location = repository_location(config, os.path.abspath(path))
    if location is None:
        raise UsageError(
            f"{path}: under no [[transfer.repositories]] path of {config.source}; "
            "give --node NODE for files on a node"
        )
    return location


def scan_local(files: Iterable[str]) -> Iterator[tuple[str, ScanAnswer]]:
    """Each file's scan, or the reason it could not be read."""
    for path in files:
        try:
            yield path, scan_file(path)
        except FitsFormatError as exc:
            yield path, str(exc)
        except OSError as exc:
            yield path, f"cannot read: {exc.strerror or exc}"


def ingest_scans(
    engine: Engine,
    scans: Iterable[tuple[str, Location, ScanAnswer]],
    *,
    total: int,
    report: IngestReport | None = None,
    progress: Progress | None = None,
    maps: Sequence[HeaderMap] | None = None,
) -> IngestReport:
    """Judge each scanned file and write the good ones (see the module docstring)."""
    maps = shipped_maps() if maps is None else maps
    report = IngestReport() if report is None else report
    pending: list[ImageRecord] = []
    taken: dict[str, str] = {}  # filename -> path that gave it, across the batch
    for done, (path, location, answer) in enumerate(scans, start=1):
        record = _judge(path, location, answer, maps, taken, report)
        if record is not None:
            pending.append(record)
            if len(pending) >= TRANSACTION_FILES:
                _write(engine, pending, report)
                pending = []
        if progress is not None:
            progress(done, total)
    if pending:
        _write(engine, pending, report)
    return report


def _judge(
    path: str,
    location: Location,
    answer: ScanAnswer,
    maps: Sequence[HeaderMap],
    taken: dict[str, str],
    report: IngestReport,
) -> ImageRecord | None:
    if isinstance(answer, str):
        report.skipped.append(Skipped(path, None, answer))
        return None
    try:
        record = read_record(
            answer,
            path,
            maps,
            node=location.node,
            partition=location.partition,
            repository=location.repository,
        )
    except HeaderRejected as exc:
        report.skipped.append(Skipped(path, exc.key, exc.reason))
        return None
    first = taken.setdefault(record.filename, path)
    if first != path:
        report.skipped.append(
            Skipped(path, None, f"image {record.filename} is also {first} in this batch")
        )
        return None
    return record


def _write(engine: Engine, records: list[ImageRecord], report: IngestReport) -> None:
    with unavailable_raised(engine), session_scope(engine) as session:
        outcomes, totals = write_records(session, records)
    for record, outcome in zip(records, outcomes, strict=True):
        report.ingested.append(
            Ingested(record.path, record.filename, record.runid, record.filter, outcome)
        )
    for t in totals:
        report.runids[t.name] = t


def ingest_local(
    engine: Engine,
    config: SpicaConfig,
    paths: Sequence[str],
    *,
    progress: Progress | None = None,
    maps: Sequence[HeaderMap] | None = None,
) -> IngestReport:
    """Ingest files on this host under configured repositories (UsageError for any other
    path, before anything is read)."""
    locations = {os.path.abspath(p): local_location(config, p) for p in paths}
    walked = walk_paths(locations)
    report = IngestReport(skipped=[Skipped(p.path, None, p.reason) for p in walked.problems])

    def located() -> Iterator[tuple[str, Location, ScanAnswer]]:
        for path, answer in scan_local(walked.files):
            location = repository_location(config, path) or Location()
            yield path, location, answer

    return ingest_scans(
        engine, located(), total=len(walked.files), report=report, progress=progress, maps=maps
    )

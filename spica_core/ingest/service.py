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
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from spica_core.config import SpicaConfig
from spica_core.db.engine import session_scope, unavailable_raised
from spica_core.errors import SpicaError, UsageError
from spica_core.ingest.fitsscan import FitsFormatError, ScannedFits, scan_file
from spica_core.ingest.header_map import HeaderMap, shipped_maps
from spica_core.ingest.record import HeaderRejected, ImageRecord, read_record
from spica_core.ingest.walk import walk_paths
from spica_core.ingest.writer import Outcome, RunidTotals, known_nodes, write_records

if TYPE_CHECKING:
    from spica_core.executor.base import Executor
    from spica_core.node.protocol import FitsFile

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
    """The repository on this host holding ``path`` (absolute; by its own path or the one its
    links resolve to), as a location; None if none does."""
    candidates = {path, os.path.realpath(path)}
    for repo in config.transfer.repositories:
        if repo.node is not None:
            continue
        for base in {repo.path.rstrip("/"), os.path.realpath(repo.path)}:
            if any(c == base or c.startswith(base + "/") for c in candidates):
                return Location(repository=repo.name)
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


class _Batch:
    """One ingestion run: judges files as they come, writes good ones in transactions."""

    def __init__(
        self, engine: Engine, maps: Sequence[HeaderMap] | None, report: IngestReport | None
    ) -> None:
        self.engine = engine
        self.maps = shipped_maps() if maps is None else maps
        self.report = IngestReport() if report is None else report
        self._pending: list[ImageRecord] = []
        self._taken: dict[str, str] = {}  # filename -> path that gave it, across the run
        self._fed: set[str] = set()

    def feed(self, path: str, location: Location, answer: ScanAnswer) -> None:
        record = self._judge(path, location, answer)
        if record is not None:
            self._pending.append(record)
            if len(self._pending) >= TRANSACTION_FILES:
                self.flush()

    def skip(self, path: str, key: str | None, reason: str) -> None:
        self.report.skipped.append(Skipped(path, key, reason))

    def _judge(self, path: str, location: Location, answer: ScanAnswer) -> ImageRecord | None:
        if isinstance(answer, str):
            self.skip(path, None, answer)
            return None
        try:
            record = read_record(
                answer,
                path,
                self.maps,
                node=location.node,
                partition=location.partition,
                repository=location.repository,
            )
        except HeaderRejected as exc:
            self.skip(path, exc.key, exc.reason)
            return None
        first = self._taken.setdefault(record.filename, path)
        if first != path:
            self.skip(path, None, f"image {record.filename} is also {first} in this batch")
            return None
        if record.filename in self._fed:
            return None  # the same file again (a node's pages shifted under a new file)
        self._fed.add(record.filename)
        return record

    def flush(self) -> None:
        records, self._pending = self._pending, []
        if not records:
            return
        with unavailable_raised(self.engine), session_scope(self.engine) as session:
            outcomes, totals = write_records(session, records)
        for record, outcome in zip(records, outcomes, strict=True):
            self.report.ingested.append(
                Ingested(record.path, record.filename, record.runid, record.filter, outcome)
            )
        for t in totals:
            self.report.runids[t.name] = t


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
    batch = _Batch(engine, maps, report)
    for done, (path, location, answer) in enumerate(scans, start=1):
        batch.feed(path, location, answer)
        if progress is not None:
            progress(done, total)
    batch.flush()
    return batch.report


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


@dataclass(frozen=True)
class NodeFiles:
    """Paths on one node, relative to its spica root, and where their rows say they are."""

    node: str
    paths: tuple[str, ...]
    repository: str | None = None
    partition: str | None = None


def node_files(
    config: SpicaConfig, node: str, paths: Sequence[str], partition: str | None
) -> NodeFiles:
    """``--node N [--partition P] PATH…``: paths relative to N's root (or to P under it), or
    absolute inside it; a UsageError otherwise."""
    from spica_core.names import validate_name

    root = config.node(node).root.rstrip("/")
    base = root if partition is None else f"{root}/{validate_name(partition, 'partition')}"
    relative = []
    for path in paths:
        full = os.path.normpath(path if path.startswith("/") else f"{base}/{path}")
        if not (full + "/").startswith(root + "/"):
            raise UsageError(f"{path}: not under the spica root {root} of node {node}")
        relative.append(os.path.relpath(full, root))
    return NodeFiles(node, tuple(relative), partition=partition)


def repository_files(config: SpicaConfig, path: str) -> NodeFiles | None:
    """A path in a repository on a node, relative to that node's root; None when the path is
    in no repository on a node. The repository must lie under the node's spica root (the
    agent reads nothing else)."""
    for repo in config.transfer.repositories:
        base = repo.path.rstrip("/")
        if repo.node is None or not (path.rstrip("/") + "/").startswith(base + "/"):
            continue
        root = config.node(repo.node).root.rstrip("/")
        if not (base + "/").startswith(root + "/"):
            raise UsageError(
                f"repository {repo.name!r} ({repo.path}) is not under the spica root {root} "
                f"of its node {repo.node}: the node's agent cannot read it"
            )
        rel = os.path.relpath(os.path.normpath(path), root)
        return NodeFiles(repo.node, (rel,), repository=repo.name)
    return None


async def ingest_node(
    engine: Engine,
    config: SpicaConfig,
    executor: Executor,
    files: NodeFiles,
    *,
    report: IngestReport | None = None,
    progress: Progress | None = None,
    maps: Sequence[HeaderMap] | None = None,
) -> IngestReport:
    """Ingest files on a node, read there by its agent (``fits_headers``) in pages of at most
    MAX_FITS_FILES files. NodeUnreachable propagates; the agent's refusal is a UsageError
    (a path outside its root, a bad name) or a SpicaError naming the node. What earlier
    pages held stays written."""
    from spica_core.node.layout import PARTITION_PREFIX
    from spica_core.node.protocol import ErrorCode, ProtocolError

    root = config.node(files.node).root.rstrip("/")
    batch = _Batch(engine, maps, report)
    offset: int | None = 0
    done = 0
    while offset is not None:
        try:
            answer = await executor.fits_headers(files.node, files.paths, offset)
        except ProtocolError as exc:
            batch.flush()  # what was judged good is kept: re-ingesting finds it unchanged
            usage = exc.code in (ErrorCode.OUTSIDE_ROOT, ErrorCode.BAD_NAME, ErrorCode.BAD_ARGS)
            error = UsageError if usage else SpicaError
            raise error(f"node {files.node}: {exc.message}") from None
        for problem in answer.problems:
            batch.skip(f"{root}/{problem.path}", None, problem.reason)
        for found in answer.files:
            partition = files.partition
            top = found.path.split("/", 1)[0]
            if partition is None and files.repository is None and "/" in found.path:
                partition = top if top.startswith(PARTITION_PREFIX) else None
            location = Location(files.node, partition, files.repository)
            batch.feed(f"{root}/{found.path}", location, _scan_of(found))
            done += 1
            if progress is not None:
                progress(done, answer.total)
        offset = answer.next
    batch.flush()
    return batch.report


def _scan_of(found: FitsFile) -> ScanAnswer:
    if found.error is not None or found.primary is None:
        return found.error or "the agent sent no header"
    if found.extensions is None or found.size is None or found.checksum is None:
        return "the agent's answer lacks the size, checksum or extension count"
    return ScannedFits(
        primary=found.primary,
        first_extension=found.first_extension,
        extensions=found.extensions,
        size=found.size,
        checksum=found.checksum,
        compressed=False,
    )


async def ingest_paths(
    engine: Engine,
    config: SpicaConfig,
    paths: Sequence[str],
    *,
    node: str | None = None,
    partition: str | None = None,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """``spica ingest``: files here under a repository, in a repository on a node, or (with
    ``node``) anywhere under that node's root. Every path is placed before anything is read,
    so a misplaced one is a UsageError with nothing written. ``executor`` reaches the nodes
    (default: their agents over SSH, opened here and closed after)."""
    if partition is not None and node is None:
        raise UsageError("--partition needs --node")
    remote: list[NodeFiles] = []
    local: list[str] = []
    if node is not None:
        remote.append(node_files(config, node, paths, partition))
    else:
        for path in paths:
            full = os.path.abspath(path)
            on_node = repository_files(config, full)
            if on_node is not None:
                remote.append(on_node)
            else:
                local_location(config, full)  # a UsageError for a path in no repository
                local.append(full)
    if remote:
        with unavailable_raised(engine), session_scope(engine) as session:
            known_nodes(session, {f.node for f in remote})
    report = IngestReport()
    if local:
        report = ingest_local(engine, config, local, progress=progress)
    if not remote:
        return report
    own = executor is None
    if executor is None:
        from spica_core.executor.agents import AgentExecutor

        executor = AgentExecutor.over_ssh(config, sorted({f.node for f in remote}))
    try:
        for files in remote:
            report = await ingest_node(
                engine, config, executor, files, report=report, progress=progress
            )
    finally:
        if own:
            await executor.close()
    return report

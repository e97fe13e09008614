"""``spica transfer run``: copy a runid's planned files onto their nodes, verified.

Each file, in order: claim its row (:mod:`spica_core.transfer.copy_rows`), ask the node
where to write (``prepare``), copy the source there while hashing it (one read), have the
node hash what arrived and rename it into place only if both checksums match (``place``),
then mark the row ``done`` and put the image on its node in one transaction. At most
``[transfer].in_flight`` files per node are copied at once; nodes run side by side.

Resume: a partial file left by an interrupted copy is kept when its bytes are the source's
first bytes — the node answers the partial's size and checksum, the runner hashes that
prefix of the source into the copy's own hasher (so the source is still read once) and goes
on from there; otherwise the partial is deleted and the copy starts afresh.

Failures: a copy that fails (connection lost, checksum mismatch — the partial is then
deleted on the node) is retried after ``retry_delay * 2**n``, up to ``[transfer].attempts``
tries in this run, then the row is ``failed`` with its error. A failure retrying cannot cure
(the source is missing or changed since it was planned, the destination holds other bytes,
a path outside the node's root) fails at once. A runner stopped midway leaves its rows
``interrupted`` (partials kept, to resume); one killed leaves them ``running``, taken back by
the next run once they are ``stale_after`` seconds without a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from sqlalchemy import Engine

from spica_core.checksum import Hasher, file_checksum, is_checksum
from spica_core.config import SpicaConfig
from spica_core.db.types import utcnow
from spica_core.errors import ConfigError, NodeUnreachable, SpicaError
from spica_core.executor.base import FileCopier
from spica_core.executor.file_copy import NodeFile
from spica_core.node.protocol import ErrorCode, PrepareResult, ProtocolError
from spica_core.transfer import copy_rows
from spica_core.transfer.copy_rows import Claimed

T = TypeVar("T")

#: Seconds without a heartbeat after which a ``running`` row is taken back.
DEFAULT_STALE_AFTER = 60.0
#: Agent refusals that another try cannot change.
_FINAL_CODES = frozenset(
    {
        ErrorCode.WRONG_STATE,
        ErrorCode.BAD_ARGS,
        ErrorCode.BAD_NAME,
        ErrorCode.OUTSIDE_ROOT,
        ErrorCode.UNKNOWN_VERB,
    }
)

EventKind = Literal["start", "bytes", "retry", "done", "failed", "interrupted", "lost"]
#: Outcomes beside the row states: taken back by another run midway, or claimed by one first.
LOST: Final = "lost"
SKIPPED: Final = "skipped"


@dataclass(frozen=True)
class FileEvent:
    """What the runner tells its face about one file (progress, outcome)."""

    kind: EventKind
    row: int
    filename: str
    node: str
    #: ``bytes``: newly written; ``start``: the file's size; ``done``: its size.
    bytes: int = 0
    attempt: int = 0
    #: ``start``: bytes kept from an interrupted copy.
    resumed_from: int = 0
    message: str | None = None


@dataclass(frozen=True)
class FileOutcome:
    row: int
    filename: str
    node: str
    path: str | None
    state: str
    attempts: int
    bytes: int
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunReport:
    runid: str | None
    filter: str | None
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, state: str) -> int:
        return sum(1 for f in self.files if f.state == state)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files if f.state == copy_rows.DONE)

    @property
    def ok(self) -> bool:
        return all(f.state == copy_rows.DONE for f in self.files)

    def to_json(self) -> dict[str, Any]:
        states = (copy_rows.DONE, copy_rows.FAILED, copy_rows.INTERRUPTED, LOST, SKIPPED)
        return {
            "runid": self.runid,
            "filter": self.filter,
            "files": [f.to_json() for f in self.files],
            "counts": {s: self.count(s) for s in states},
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


class NoPlan(SpicaError):
    """A runid without transfer rows: plan it first."""

    def __init__(self, runid: str, filter: str | None) -> None:
        self.runid = runid
        which = f"{runid} (filter {filter})" if filter else runid
        super().__init__(f"no plan for {which}: run `spica transfer plan {runid}`")


class _Final(Exception):
    """A failure no retry can cure: the row fails at once."""


class _Lost(Exception):
    """The row is not ours any more (taken back by another runner)."""


BeforePlace = Callable[[Claimed, PrepareResult], Awaitable[None]]


class CopyRun:
    """One run over planned rows; :meth:`stop` (safe from a signal handler) interrupts it.

    ``before_place`` is called between the copy and the node's checksum (tests corrupt the
    arrived file there); ``sleep`` waits out retry delays.
    """

    def __init__(
        self,
        config: SpicaConfig,
        engine: Engine,
        copier: FileCopier,
        *,
        stale_after: float = DEFAULT_STALE_AFTER,
        on_event: Callable[[FileEvent], None] | None = None,
        before_place: BeforePlace | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.copier = copier
        self.stale_after = stale_after
        self.heartbeat = max(0.05, min(10.0, stale_after / 4))
        self._on_event = on_event
        self._before_place = before_place
        self._claims: dict[int, Claimed] = {}
        self._db_lock = asyncio.Lock()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[FileOutcome]] = set()
        #: Rows whose node has been asked to prepare their destination (a partial may exist).
        self._prepared: set[int] = set()
        self._stopping = False

    def stop(self) -> None:
        """Interrupt the run: files under way are left ``interrupted``, their partials kept."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()

    async def run(
        self,
        runid: str | None,
        *,
        filter: str | None = None,
        states: tuple[str, ...] = copy_rows.RUN_STATES,
    ) -> RunReport:
        """Copy every runnable row of ``runid`` (None: of every runid); the report of each."""
        started = time.monotonic()
        report = RunReport(runid, filter)
        stale_before = utcnow() - timedelta(seconds=self.stale_after)
        ids = await asyncio.to_thread(
            copy_rows.runnable_ids,
            self.engine,
            runid=runid,
            filter=filter,
            states=states,
            stale_before=stale_before,
        )
        if not ids or self._stopping:
            return report
        beat = asyncio.ensure_future(self._beat())
        try:
            for row_id, node in ids:
                task = asyncio.ensure_future(self._file(row_id, node, states, stale_before))
                self._tasks.add(task)
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        for result in results:
            if isinstance(result, FileOutcome):
                report.files.append(result)
            elif isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError
            ):
                raise result
        report.files.sort(key=lambda f: f.row)
        report.seconds = time.monotonic() - started
        return report

    # ------------------------------------------------------------------ rows

    def _emit(self, event: FileEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A dbspica write of this runner's rows: one at a time (each moves a stamp), off
        the event loop."""
        async with self._db_lock:
            return await asyncio.to_thread(fn, self.engine, *args, **kwargs)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            async with self._db_lock:
                claims = list(self._claims.values())
                if not claims:
                    continue
                kept, lost = await asyncio.to_thread(copy_rows.touch, self.engine, claims)
                for c in kept:
                    self._claims[c.id] = c
                for row_id in lost:
                    self._claims.pop(row_id, None)

    def _mine(self, row_id: int) -> Claimed:
        c = self._claims.get(row_id)
        if c is None:
            raise _Lost()
        return c

    async def _update(self, row_id: int, fn: Callable[..., Claimed | None], *args: Any) -> Claimed:
        async with self._db_lock:
            c = self._mine(row_id)
            new = await asyncio.to_thread(fn, self.engine, c, *args)
            if new is None:
                self._claims.pop(row_id, None)
                raise _Lost()
            self._claims[row_id] = new
            return new

    async def _finish(self, row_id: int, fn: Callable[..., bool], *args: Any, **kw: Any) -> bool:
        async with self._db_lock:
            c = self._claims.pop(row_id, None)
            if c is None:
                return False
            return await asyncio.to_thread(fn, self.engine, c, *args, **kw)

    # ------------------------------------------------------------------ one file

    async def _file(
        self, row_id: int, node: str, states: tuple[str, ...], stale_before: datetime
    ) -> FileOutcome:
        """One file: claimed once one of its node's slots is free (a row waiting for a slot
        stays as it was), tried until done or out of attempts; the slot is let go during a
        retry's delay."""
        slot = self._slots.setdefault(node, asyncio.Semaphore(self.config.transfer.in_flight))
        await slot.acquire()
        held = True
        try:
            c = await self._db(copy_rows.claim, row_id, states=states, stale_before=stale_before)
            if c is None:
                return FileOutcome(row_id, "?", node, None, SKIPPED, 0, 0, "claimed by another run")
            self._claims[row_id] = c
            tries = 0
            last_error = "taken back from a runner that stopped" if c.taken_back else None
            path: str | None = None
            try:
                try:
                    path = destination_of(c, self.config)
                except ConfigError as exc:
                    raise _Final(str(exc)) from None
                while True:
                    tries += 1
                    try:
                        if not held:
                            await slot.acquire()
                            held = True
                        if tries > 1:
                            await self._update(row_id, copy_rows.retry, last_error)
                        checksum, size, node_checksum = await self._attempt(row_id, path)
                    except (_Final, _Lost):
                        raise
                    except (NodeUnreachable, ProtocolError, OSError, _Mismatch) as exc:
                        if isinstance(exc, ProtocolError) and exc.code in _FINAL_CODES:
                            raise _Final(_describe(exc)) from None
                        error = f"attempt {self._mine(row_id).attempts}: {_describe(exc)}"
                        if tries >= self.config.transfer.attempts:
                            raise _Final(error) from None
                        delay = self.config.transfer.retry_delay * 2 ** (tries - 1)
                        c = self._mine(row_id)
                        why = f"{error}; retrying in {delay:g} s"
                        self._emit(FileEvent("retry", row_id, c.filename, c.node,
                                             attempt=c.attempts, message=why))  # fmt: skip
                        slot.release()
                        held = False
                        await asyncio.sleep(delay)
                        last_error = error
                        continue
                    return await self._done(row_id, path, checksum, size, node_checksum, last_error)
            except _Final as exc:
                c = self._claims.get(row_id, c)
                await self._discard(c, path)
                await self._finish(row_id, copy_rows.stop, copy_rows.FAILED, str(exc))
                self._emit(FileEvent("failed", row_id, c.filename, c.node, attempt=c.attempts,
                                     message=str(exc)))  # fmt: skip
                return FileOutcome(
                    row_id, c.filename, c.node, path, copy_rows.FAILED, c.attempts, 0, str(exc)
                )
            except _Lost:
                why = "taken back by another run"
                self._emit(FileEvent(LOST, row_id, c.filename, c.node, message=why))
                return FileOutcome(row_id, c.filename, c.node, path, LOST, c.attempts, 0, why)
            except asyncio.CancelledError:
                why = "interrupted: the transfer run was stopped (the partial file is kept)"
                await asyncio.shield(
                    self._finish(row_id, copy_rows.stop, copy_rows.INTERRUPTED, why)
                )
                self._emit(FileEvent("interrupted", row_id, c.filename, c.node, message=why))
                if not self._stopping:
                    raise
                return FileOutcome(
                    row_id, c.filename, c.node, path, copy_rows.INTERRUPTED, c.attempts, 0, why
                )
        finally:
            if held:
                slot.release()

    async def _done(
        self,
        row_id: int,
        path: str,
        checksum: str,
        size: int,
        node_checksum: str,
        last_error: str | None,
    ) -> FileOutcome:
        c = self._mine(row_id)
        node_path = f"{self.config.node(c.node).root.rstrip('/')}/{path}"
        if not await self._finish(
            row_id,
            copy_rows.done,
            checksum=checksum,
            node_checksum=node_checksum,
            size=size,
            node_path=node_path,
            last_error=last_error,
        ):
            raise _Lost()
        self._emit(FileEvent("done", row_id, c.filename, c.node, size, c.attempts))
        return FileOutcome(
            row_id, c.filename, c.node, path, copy_rows.DONE, c.attempts, size, last_error
        )

    async def _discard(self, c: Claimed, path: str | None) -> None:
        """Best effort: a failed file's partial is removed (never left looking usable)."""
        if path is None or c.id not in self._prepared:
            return
        with contextlib.suppress(Exception):
            await self.copier.prepare_file(c.node, path, resume=False)

    async def _attempt(self, row_id: int, path: str) -> tuple[str, int, str]:
        """One try of the copy to ``path``: ``(source checksum, size, node checksum)``."""
        c = self._mine(row_id)
        if c.source_node is not None:
            return await self._attempt_from_node(row_id, c, path)
        source = Path(c.source)
        size = await asyncio.to_thread(_source_size, source)
        node = c.node
        self._prepared.add(row_id)
        prep = await self.copier.prepare_file(node, path, size=size, resume=True)
        if prep.destination.exists:
            # Placed by a runner that died before recording it (or put there by hand): kept
            # only if it holds the source's bytes, checked on both sides.
            checksum, _ = await asyncio.to_thread(file_checksum, source)
            _check_known(c, checksum)
            placed = await self.copier.place_file(node, path, size, checksum)
            return checksum, size, placed.checksum
        hasher, offset = Hasher(), 0
        if prep.size and prep.checksum and prep.size <= size:
            prefix = await asyncio.to_thread(_hash_prefix, source, prep.size, hasher)
            if prefix == prep.checksum:
                offset = prep.size
            else:
                hasher = Hasher()
        if prep.size and not offset:
            prep = await self.copier.prepare_file(node, path, size=size, resume=False)
        self._emit(FileEvent("start", row_id, c.filename, node, size, c.attempts, offset))

        def progress(n: int) -> None:
            self._emit(FileEvent("bytes", row_id, c.filename, node, n))

        written = await self.copier.copy_file(
            node, source, prep, hasher, offset=offset, progress=progress
        )
        checksum = hasher.value()
        if written != size:
            raise OSError(f"source {source} changed size while copied ({size} -> {written})")
        _check_known(c, checksum)
        return await self._place(c, prep, path, written, checksum)

    async def _place(
        self, c: Claimed, prep: PrepareResult, path: str, written: int, checksum: str
    ) -> tuple[str, int, str]:
        """The node hashes what arrived and renames it into place if it equals ``checksum``."""
        if self._before_place is not None:
            await self._before_place(c, prep)
        placed = await self.copier.place_file(c.node, path, written, checksum)
        if not placed.placed:
            raise _Mismatch(c.node, checksum, placed.checksum, placed.size)
        return checksum, written, placed.checksum

    async def _attempt_from_node(self, row_id: int, c: Claimed, path: str) -> tuple[str, int, str]:
        """One try of a copy whose source is on another node (a repository there): the
        source node hashes its file, the bytes are relayed over both nodes' connections and
        hashed on the way, the destination hashes what arrived; all three must agree. Never
        resumed: a partial is copied afresh (hashing its prefix would read it twice)."""
        assert c.source_node is not None
        rel = _under_root(self.config, c.source_node, c.source)
        [found] = await self.copier.file_sums(c.source_node, [rel])
        if not found.exists or found.size is None or found.checksum is None:
            why = found.error or "no such file"
            raise _Final(f"source {c.source} on node {c.source_node}: {why}")
        _check_known(c, found.checksum)
        size, node = found.size, c.node
        self._prepared.add(row_id)
        prep = await self.copier.prepare_file(node, path, size=size, resume=False)
        if prep.destination.exists:
            placed = await self.copier.place_file(node, path, size, found.checksum)
            return found.checksum, size, placed.checksum
        self._emit(FileEvent("start", row_id, c.filename, node, size, c.attempts, 0))

        def progress(n: int) -> None:
            self._emit(FileEvent("bytes", row_id, c.filename, node, n))

        hasher = Hasher()
        written = await self.copier.copy_file(
            node, NodeFile(c.source_node, rel), prep, hasher, progress=progress
        )
        checksum = hasher.value()
        if written != size or checksum != found.checksum:
            raise OSError(
                f"source {c.source} on node {c.source_node} changed while copied "
                f"({size} bytes {found.checksum}, read {written} bytes {checksum})"
            )
        return await self._place(c, prep, path, written, checksum)


def _under_root(config: SpicaConfig, node: str, source: str) -> str:
    """``source`` relative to ``node``'s root; _Final when it lies elsewhere."""
    try:
        root = config.node(node).root.rstrip("/")
    except ConfigError:
        raise _Final(f"source {source}: node {node} is not in [[nodes]]") from None
    if not source.startswith(root + "/"):
        raise _Final(f"source {source} is not under node {node}'s root {root}")
    return source[len(root) + 1 :]


class _Mismatch(Exception):
    def __init__(self, node: str, source: str, got: str, size: int) -> None:
        super().__init__(
            f"checksum mismatch on {node}: source {source}, node {got} ({size} bytes); "
            "the partial file was deleted"
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProtocolError):
        return exc.message
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_known(c: Claimed, checksum: str) -> None:
    """The source must still be what was planned (ingest's checksum), when that is known."""
    if c.checksum and is_checksum(c.checksum) and c.checksum != checksum:
        raise _Final(
            f"source {c.source} changed since it was planned: checksum {c.checksum}, now {checksum}"
        )


def _source_size(source: Path) -> int:
    try:
        st = os.stat(source)
    except OSError as exc:
        raise _Final(f"source {source}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Final(f"source {source} is not a regular file")
    return st.st_size


def _hash_prefix(source: Path, size: int, hasher: Hasher) -> str:
    """The checksum of the first ``size`` bytes of ``source``, fed to ``hasher`` as well."""
    from spica_core.checksum import CHUNK

    prefix = Hasher()
    with open(source, "rb") as f:
        left = size
        while left and (block := f.read(min(CHUNK, left))):
            prefix.update(block)
            hasher.update(block)
            left -= len(block)
    return prefix.value()


def destination_of(c: Claimed, config: SpicaConfig) -> str:
    """The row's destination relative to its node's root.

    ``destination_path`` is absolute under the node's root or relative to it; without one,
    ``<partition>/<runid>/<file>``. Its first component must be the row's partition.
    """
    root = config.node(c.node).root.rstrip("/")
    path = c.path
    if path is None:
        if not c.partition:
            raise ConfigError(f"transfer {c.id} ({c.filename}) has no destination partition")
        path = "/".join(p for p in (c.partition, c.runid, c.filename) if p)
    elif path.startswith("/"):
        if not path.startswith(root + "/"):
            raise ConfigError(
                f"destination {path} of {c.filename} is not under node {c.node}'s root {root}"
            )
        path = path[len(root) + 1 :]
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or len(parts) < 2:
        raise ConfigError(f"destination {c.path!r} of {c.filename} is not a file in a partition")
    if c.partition and parts[0] != c.partition:
        raise ConfigError(f"destination {c.path} of {c.filename} is not on partition {c.partition}")
    return path

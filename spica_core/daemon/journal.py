"""The daemon's journal of dbspica writes: append-only JSON lines, fsynced, replayed in order.

The file (``[daemon].journal`` under the node root, default ``journal/dbspica.jsonl``)::

    {"journal": "9f1c…", "node": "mix1", "base": 0, "created": "2026-…Z"}     the header
    {"seq": 1, "kind": "claimed", "at": "2026-…Z", "stack": "…", …}
    {"seq": 2, …}

Every dbspica write of the daemon is appended here first (and fsynced) and applied to dbspica
afterwards (:mod:`spica_core.daemon.replay`); ``seq`` is dense and increasing, so the
replay can apply entries in order and skip what dbspica already holds.

Appends from several processes (two daemons on one root) are serialised by ``flock`` on
``<journal>.lock``, which also guards compaction. A last line without its newline was never
acknowledged (a crash in the middle of the write); the next append terminates it first, and
counts its seq if it is complete JSON, so that no seq is ever given twice. Readers consume
only newline-terminated lines and need no lock.

Bounded: once every entry is applied and the file is over :data:`COMPACT_BYTES`, it is
replaced (atomically) by a header alone whose ``base`` is the last seq: same journal id, and
the numbering goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spica_core.node.files import atomic_write
from spica_core.node.host import iso_utc

log = logging.getLogger("spica.daemon")

#: The message of the problem a daemon files when dbspica's position in its journal has
#: gone back (an older dbspica restored); reconcile reports the open ones.
JOURNAL_BEHIND = "dbspica is behind the journal of node {node}"
#: Compaction only happens once the applied journal grows past this.
COMPACT_BYTES = 256 * 1024
REJECTED_SUFFIX = ".rejected"


class JournalError(Exception):
    """The journal file cannot be used (unreadable header, I/O error)."""


@dataclass
class _ReadState:
    ino: int | None = None
    offset: int = 0
    journal_id: str = ""
    base: int = 0
    last_seq: int = 0
    rest: bytes = b""
    entries: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class JournalBatch:
    """Entries read from one journal (its id goes with them to dbspica); ``base`` is the
    last seq compacted away: every entry up to it was applied once and is gone."""

    journal_id: str
    entries: list[dict[str, Any]]
    base: int = 0


class Journal:
    """One node's journal file. Thread-safe; safe across processes sharing the file."""

    def __init__(self, path: Path, node: str) -> None:
        self.path = path
        self.node = node
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.Lock()
        self._lock_fd = os.open(
            path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        self._fd: int | None = None
        self._ino: int | None = None
        self._end = 0
        self._last_seq = 0
        self._needs_newline = False
        self.journal_id = ""
        self._read = _ReadState()
        with self._locked():
            self._sync_with_file()

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # ------------------------------------------------------------------- appending

    def append(self, entry: dict[str, Any]) -> int:
        """Append ``entry`` with the next seq and fsync it; the seq. Durable on return."""
        with self._locked():
            self._sync_with_file()
            seq = self._last_seq + 1
            line = json.dumps({"seq": seq, **entry}, ensure_ascii=False, separators=(",", ":"))
            data = (b"\n" if self._needs_newline else b"") + line.encode("utf-8") + b"\n"
            assert self._fd is not None
            _write_all(self._fd, data)
            os.fdatasync(self._fd)
            self._last_seq = seq
            self._end += len(data)
            self._needs_newline = False
            return seq

    @property
    def last_seq(self) -> int:
        """The last seq this process knows of (its own appends and what it has scanned)."""
        return self._last_seq

    def compact(self, applied_seq: int, min_bytes: int = COMPACT_BYTES) -> bool:
        """Replace a fully applied journal by its header alone; whether it did."""
        with self._locked():
            self._sync_with_file()
            if self._last_seq != applied_seq or self._end < min_bytes:
                return False
            self._write_header(self.journal_id, self._last_seq)
            self._sync_with_file()
            log.info("journal %s compacted at seq %d", self.path, applied_seq)
            return True

    def reject(self, entry: dict[str, Any], reason: str) -> None:
        """Keep an entry dbspica refused for good beside the journal (never dropped silently)."""
        path = self.path.with_name(self.path.name + REJECTED_SUFFIX)
        line = json.dumps({"reason": reason, "entry": entry}, ensure_ascii=False) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, line.encode("utf-8"))
            os.fdatasync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------- reading

    def read_new(self) -> JournalBatch:
        """The complete entries appended (by any process) since the last call, in order."""
        state = self._read
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return JournalBatch(state.journal_id, [], state.base)
        with os.fdopen(fd, "rb") as f:
            ino = os.fstat(fd).st_ino
            if ino != state.ino:  # created, compacted or replaced: read it from the start
                self._read = state = _ReadState(ino=ino)
            f.seek(state.offset)
            data = state.rest + f.read()
        state.offset += len(data) - len(state.rest)
        cut = data.rfind(b"\n") + 1
        state.rest = data[cut:]
        for raw in data[:cut].split(b"\n"):
            record = _parse(raw)
            if record is None:
                if raw.strip():
                    log.warning("journal %s: unreadable line skipped: %.80r", self.path, raw)
                continue
            if "journal" in record:
                state.journal_id = str(record["journal"])
                state.base = _int(record.get("base"))
                state.last_seq = max(state.last_seq, state.base)
                continue
            seq = _int(record.get("seq"))
            if seq <= state.last_seq:
                continue
            state.last_seq = seq
            state.entries.append(record)
        out, state.entries = state.entries, []
        return JournalBatch(state.journal_id, out, state.base)

    def rewind(self) -> None:
        """Read the whole file again at the next :meth:`read_new` (every entry still in it)."""
        self._read = _ReadState()

    # ------------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _sync_with_file(self) -> None:
        """Under the lock: follow a replaced file, learn the seqs appended by others."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._write_header(uuid.uuid4().hex, 0)
            st = os.stat(self.path)
        if self._fd is None or st.st_ino != self._ino:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            self._ino = os.fstat(self._fd).st_ino
            self._end, self._last_seq, self.journal_id = 0, 0, ""
            self._needs_newline = False
        size = os.fstat(self._fd).st_size
        if size != self._end:
            data = os.pread(self._fd, size - self._end, self._end)
            for raw in data.split(b"\n"):
                record = _parse(raw)
                if record is None:
                    continue
                if "journal" in record and not self.journal_id:
                    self.journal_id = str(record["journal"])
                    self._last_seq = max(self._last_seq, _int(record.get("base")))
                elif "seq" in record:
                    self._last_seq = max(self._last_seq, _int(record["seq"]))
            self._end = size
            self._needs_newline = not data.endswith(b"\n")
        if not self.journal_id:
            self._set_aside("no readable header")

    def _set_aside(self, why: str) -> None:
        """A journal without a readable header cannot be replayed safely: keep it beside,
        start a new one (a new id, so dbspica's record of the old one does not apply)."""
        if os.stat(self.path).st_size == 0:
            os.unlink(self.path)  # nothing to keep (created by hand, or a crash at creation)
        else:
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            log.error("journal %s: %s; moved to %s, starting a new one", self.path, why, aside)
            os.replace(self.path, aside)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._sync_with_file()

    def _write_header(self, journal_id: str, base: int) -> None:
        header = {"journal": journal_id, "node": self.node, "base": base, "created": iso_utc()}
        data = json.dumps(header).encode() + b"\n"
        atomic_write(self.path, data, mode=0o644, sync_dir=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _parse(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

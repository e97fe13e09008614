"""File I/O on a node: the one atomic write, bounded reads, and a cache keyed on a file's stat.

Node files are written by one process and read by others (agents, daemons, hand edits, older
launchers) at any moment, so a file is never seen half-written: every write goes through
:func:`atomic_write`. They may also be half-written by a crash, hand-edited, replaced by a FIFO
or a symlink: readers never follow a final symlink, never block, and read a bounded amount.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

P = TypeVar("P", str, Path)

#: Queue records, locks and heartbeats are a few hundred bytes; a bigger file is refused
#: (reported as malformed) rather than read, so a runaway writer cannot slow every status.
MAX_RECORD_BYTES = 256 * 1024
#: The mode of a file :func:`atomic_write` creates unless told otherwise (mkstemp's own).
PRIVATE_MODE = 0o600


def atomic_write(
    path: Path,
    data: bytes,
    *,
    exclusive: bool = False,
    mode: int = PRIVATE_MODE,
    durable: bool = True,
    sync_dir: bool = False,
) -> None:
    """Make ``path`` hold exactly ``data``; readers see the old content or the new, whole.

    The bytes go to a temporary file beside ``path`` (``.<name>.*.tmp``, ignored by every
    queue reader), fsynced unless ``durable`` is False (files that only matter during this
    boot), which then takes the name: with ``exclusive`` by link(2), which never replaces
    an existing file (FileExistsError: whoever created it first won), else by rename(2).
    The file has ``mode`` from its first byte on; ``sync_dir`` also fsyncs the directory, so
    the new name itself survives a crash.
    """
    import tempfile  # only writers pay for it: most agent sessions only read

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    leftover: str | None = tmp  # the temporary name, until a rename makes it ``path``
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != PRIVATE_MODE:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
            leftover = None
        if sync_dir:
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if leftover is not None:
            with contextlib.suppress(OSError):
                os.unlink(leftover)


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, for messages ("a FIFO", "a directory"…)."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def read_small(path: str | Path, limit: int = MAX_RECORD_BYTES) -> bytes:
    """The whole of a small regular file, without following a final symlink or blocking.

    Raises OSError (FileNotFoundError when absent) or ValueError when it is not a regular
    file or is over ``limit`` bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        # Reads sized by the file (a record is a few hundred bytes; a buffer of ``limit``
        # would be allocated and freed for each), until its end or past ``limit``.
        chunks: list[bytes] = []
        size, want = 0, min(st.st_size, limit) + 1
        while size <= limit and (chunk := os.read(fd, want)):
            chunks.append(chunk)
            size += len(chunk)
            want = limit + 1 - size
    finally:
        os.close(fd)
    if size > limit:
        raise ValueError(f"over {limit} bytes")
    return b"".join(chunks)


def one_line(exc: BaseException) -> str:
    """An exception as one short line for a message or the wire (strerror alone for an OSError)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return " ".join(text.split())[:300]


def count_lines(path: Path) -> int:
    """Physical lines of a file (a last line without newline counts), read in chunks.

    Line numbers in logs and ``progress`` are these physical line numbers.
    """
    count = 0
    last = b"\n"
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        while chunk := f.read(1 << 16):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


class StatCache:
    """Memoise a per-file computation until the file's (inode, size, mtime) changes.

    Status is polled every few seconds, so counting ``commands.sh`` lines or hashing a binary
    again each time would be waste; a rewritten file changes its stat signature.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[str, tuple[tuple[int, int, int, int], Any]] = {}
        self._max = max_entries

    def get(self, path: P, compute: Callable[[P], Any], st: os.stat_result | None = None) -> Any:
        """``compute(path)``, or its memo; ``st`` is the caller's fresh lstat of ``path``."""
        if st is None:
            st = os.stat(path, follow_symlinks=False)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._entries.get(str(path))
        if hit is not None and hit[0] == key:
            return hit[1]
        value = compute(path)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[str(path)] = (key, value)
        return value

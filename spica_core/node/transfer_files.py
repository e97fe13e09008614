"""The agent's side of DataTransfer: checksums of files, and the partial-then-rename landing.

A copy never writes its destination directly: it writes ``.<name>.spica-part`` beside it
(hidden, and a name :func:`spica_core.names.validate_name` refuses, so no request can name it
as a destination), then ``place`` hashes that partial here, on the node, and renames it into
place only when size and checksum are the source's. The rename is atomic within the
directory, so a destination file is complete or absent — never half-written, whatever dies
when. A partial that does not match is deleted at once: it is never taken up again.

Paths are relative to the spica root, at least ``<partition>/<file>``, each component a
valid name; the queue, stacks, locks and removed directories are not destinations.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from spica_core.names import validate_name
from spica_core.node.layout import (
    HEARTBEAT_FILE,
    LOCKS_DIR,
    QUEUE_DIR,
    REMOVED_DIR,
    STACKS_DIR,
    NodeLayout,
)
from spica_core.node.protocol import (
    ChecksumArgs,
    ChecksumResult,
    ErrorCode,
    FileSum,
    PlaceArgs,
    PlaceResult,
    PrepareArgs,
    PrepareResult,
    ProtocolError,
)

PARTIAL_SUFFIX = ".spica-part"
_NOT_DESTINATIONS = frozenset({QUEUE_DIR, STACKS_DIR, LOCKS_DIR, REMOVED_DIR, HEARTBEAT_FILE})


def partial_name(path: str) -> str:
    """The partial file of ``path`` (relative): hidden, beside it, so the rename is atomic."""
    head, _, name = path.rpartition("/")
    return f"{head}/.{name}{PARTIAL_SUFFIX}" if head else f".{name}{PARTIAL_SUFFIX}"


def destination(path: str) -> str:
    """``path`` checked as a transfer destination: ``<partition>/…/<file>``, valid names."""
    parts = path.split("/")
    if len(parts) < 2:
        raise ProtocolError(
            ErrorCode.BAD_ARGS, f"destination {path!r:.200} must be <partition>/<file>"
        )
    for part in parts:
        validate_name(part, "path component")
    if parts[0] in _NOT_DESTINATIONS:
        raise ProtocolError(
            ErrorCode.BAD_ARGS, f"destination {path!r:.200} is not under a data partition"
        )
    return "/".join(parts)


def _sum(real: Path, shown: str, *, size: int | None = None) -> FileSum:
    """Size and checksum of one file, never following a final symlink nor blocking on a
    FIFO; with ``size``, a file of another size is answered without being read."""
    from spica_core.checksum import stream_checksum

    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return FileSum(path=shown, exists=False)
    except OSError as exc:
        return FileSum(path=shown, exists=True, error=exc.strerror or type(exc).__name__)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return FileSum(path=shown, exists=True, error="not a regular file")
    with os.fdopen(fd, "rb") as f:
        if size is not None and st.st_size != size:
            return FileSum(path=shown, exists=True, size=st.st_size)
        value, read = stream_checksum(f)
    return FileSum(path=shown, exists=True, size=read, checksum=value)


def checksum(layout: NodeLayout, args: ChecksumArgs) -> ChecksumResult:
    """Size and checksum of each path (missing files say so; nothing is refused but a path
    outside the root, which refuses the request)."""
    reals = [layout.resolve(path) for path in args.paths]
    return ChecksumResult(files=[_sum(r, p) for r, p in zip(reals, args.paths, strict=True)])


def prepare(layout: NodeLayout, args: PrepareArgs) -> PrepareResult:
    path = destination(args.path)
    partial = partial_name(path)
    real_partial = layout.resolve(partial)
    real_partial.parent.mkdir(parents=True, exist_ok=True)
    # Made, then checked again: a directory swapped for a symlink meanwhile is refused.
    real_partial = layout.resolve(partial)
    found = _sum(real_partial, partial)
    if found.error is not None:
        raise ProtocolError(ErrorCode.WRONG_STATE, f"partial {partial}: {found.error}")
    if found.exists and not args.resume:
        os.unlink(real_partial)
        found = FileSum(path=partial, exists=False)
    return PrepareResult(
        path=path,
        partial=partial,
        real_partial=str(real_partial),
        size=found.size or 0,
        checksum=found.checksum,
        destination=_sum(layout.resolve(path), path, size=args.size),
    )


def place(layout: NodeLayout, args: PlaceArgs) -> PlaceResult:
    path = destination(args.path)
    partial = partial_name(path)
    real, real_partial = layout.resolve(path), layout.resolve(partial)
    there = _sum(real, path, size=args.size)
    if there.exists:
        if there.checksum != args.checksum:
            held = there.error or f"{there.size} bytes, {there.checksum or 'another size'}"
            raise ProtocolError(
                ErrorCode.WRONG_STATE, f"destination {path} exists with other content ({held})"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(real_partial)
        return PlaceResult(
            path=path, placed=True, already=True, size=args.size, checksum=args.checksum
        )
    got = _sum(real_partial, partial)
    if not got.exists:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no partial file {partial} to place")
    if got.error is not None or got.size is None or got.checksum is None:
        raise ProtocolError(ErrorCode.WRONG_STATE, f"partial {partial}: {got.error}")
    if (got.size, got.checksum) != (args.size, args.checksum):
        os.unlink(real_partial)  # never taken up again: the next copy starts afresh
        return PlaceResult(
            path=path, placed=False, already=False, size=got.size, checksum=got.checksum
        )
    _flush(real_partial)
    os.rename(real_partial, real)
    _flush(real.parent)
    return PlaceResult(path=path, placed=True, already=False, size=got.size, checksum=got.checksum)


def _flush(path: Path) -> None:
    """fsync a file before its rename (and the directory after): a crash of the node right
    after ``place`` answered must not leave an empty file under the final name."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

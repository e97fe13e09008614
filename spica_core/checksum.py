"""File checksums: one algorithm for ingestion, the copy's source and the node's answer.

XXH3-128 (``xxhash``) is not cryptographic; it detects corruption in transit and on disk at
memory speed, which is all DataTransfer asks of it. The algorithm is part of the value
(``xxh128:<hex>``) so that a later change of algorithm never compares unlike values.
"""

from __future__ import annotations

import io
import os

import xxhash

ALGORITHM = "xxh128"
CHUNK = 4 * 1024 * 1024


class Hasher:
    """An incremental checksum, for data hashed while it is copied."""

    def __init__(self) -> None:
        self._h = xxhash.xxh3_128()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def value(self) -> str:
        return f"{ALGORITHM}:{self._h.hexdigest()}"


def stream_checksum(stream: io.BufferedIOBase, chunk: int = CHUNK) -> tuple[str, int]:
    """Checksum and size of what is left in ``stream``, read into one buffer (a fresh
    block per read would be faulted in and zeroed again each time) no larger than what is
    left: a 3 KB file must not pay for zeroing a 4 MiB buffer."""
    hasher = Hasher()
    buffer = bytearray(_buffer_size(stream, chunk))
    view = memoryview(buffer)
    while n := stream.readinto(buffer):
        hasher.update(view[:n])
    return hasher.value(), hasher.size


def _buffer_size(stream: io.BufferedIOBase, chunk: int) -> int:
    """``chunk``, or less when the stream is a file with less than that left (a file that
    grows meanwhile is still read whole, a buffer at a time)."""
    try:
        left = os.fstat(stream.fileno()).st_size - stream.tell()
    except (OSError, ValueError, io.UnsupportedOperation):
        return chunk
    return max(4096, min(chunk, left))


def file_checksum(path: str | os.PathLike[str], chunk: int = CHUNK) -> tuple[str, int]:
    """Checksum and size of the file at ``path``."""
    with open(path, "rb") as stream:
        return stream_checksum(stream, chunk)


def is_checksum(value: str) -> bool:
    algorithm, _, digest = value.partition(":")
    return (
        algorithm == ALGORITHM
        and len(digest) == 32
        and all(c in "0123456789abcdef" for c in digest)
    )

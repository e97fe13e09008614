"""Writing a source file into a node's partial file: over SFTP, or on this machine.

The source — a file here, or a file on another node read over its SFTP session — is read
once, in order, each block hashed as it is read (the checksum the node's copy must match)
and written at its offset. Over SFTP a block is read as pieces of :data:`WRITE` bytes (or
the server's largest write, if smaller), each sent as one write request, :data:`DEPTH` of
them in flight: a round trip per request would cap a copy at a fraction of the link. Reads
and hashing run in a worker thread, so the event loop driving every node's SSH channel
never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from spica_core.checksum import Hasher

if TYPE_CHECKING:
    import asyncssh

#: Bytes of one SFTP write request: the most OpenSSH's sftp-server accepts (its 256 KiB
#: message less 1 KiB), whose request then still fits a 256 KiB channel packet whole (what
#: demo nodes offer). A larger write is cut by the channel into a full packet and a sliver,
#: which the node's server must join again; without that, copies into a demo node ran 15 to
#: 35 % faster (bench/transfer.py, median of four rounds, three runs each way). Packets and
#: writes of 1 MiB, or of 128 KiB, were both slower than 256 KiB on a two-core machine.
WRITE = 255 * 1024
#: Bytes read, hashed and written as one block: a whole number of writes, so that no block
#: ends in a sliver of a request.
BLOCK = 4 * WRITE
#: Write requests of one file in flight at once over SFTP (8 MiB: a demo node's window).
DEPTH = 32

#: Test hook: with ``SPICA_FAULT_POINT=transfer-slow-copy`` in the environment, each block
#: waits ``SPICA_FAULT_SECONDS`` (default 0.05) before it is written: the time to kill a copy
#: midway.
FAULT_ENV = "SPICA_FAULT_POINT"


async def _fault_pause() -> None:
    if os.environ.get(FAULT_ENV) == "transfer-slow-copy":
        await asyncio.sleep(float(os.environ.get("SPICA_FAULT_SECONDS", "0.05")))


def _read(src: BinaryIO, hasher: Hasher, piece: int) -> list[bytes]:
    """The next block, read a piece at a time: each piece becomes one write request whole
    (asyncssh would slice a larger buffer into requests, a copy of every byte)."""
    pieces: list[bytes] = []
    left = BLOCK
    while left > 0 and (data := src.read(min(piece, left))):
        hasher.update(data)
        pieces.append(data)
        left -= len(data)
    return pieces


def open_source(source: Path, offset: int) -> BinaryIO:
    """The source, positioned at ``offset``; OSError naming it when it cannot be read."""
    src = open(source, "rb")  # noqa: SIM115 - closed by the caller
    try:
        if offset:
            src.seek(offset)
    except BaseException:
        src.close()
        raise
    return src


@dataclass(frozen=True)
class NodeFile:
    """A source held by a node (a repository on a node): ``path`` relative to its root."""

    node: str
    path: str


class BlockSource(Protocol):
    """Where a copy reads from, a block at a time, each block hashed as it is read."""

    async def read(self, hasher: Hasher, piece: int = BLOCK) -> list[bytes]:
        """The next block as pieces of at most ``piece`` bytes; empty at the end."""
        ...

    async def close(self) -> None: ...


class LocalSource:
    """A file on this machine, read in a worker thread."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self._file = open_source(path, offset)

    async def read(self, hasher: Hasher, piece: int = BLOCK) -> list[bytes]:
        return await asyncio.to_thread(_read, self._file, hasher, piece)

    async def close(self) -> None:
        self._file.close()


class SftpSource:
    """A file on another node, read over that node's SFTP session (asyncssh pipelines the
    reads of one block)."""

    def __init__(self, file: asyncssh.SFTPClientFile) -> None:
        self._file = file

    async def read(self, hasher: Hasher, piece: int = BLOCK) -> list[bytes]:
        data = await self._file.read(BLOCK)
        assert isinstance(data, bytes)
        hasher.update(data)
        return [data[i : i + piece] for i in range(0, len(data), piece)]

    async def close(self) -> None:
        await self._file.close()


async def sftp_write(
    sftp: asyncssh.SFTPClient,
    src: BlockSource,
    remote: str,
    hasher: Hasher,
    *,
    offset: int = 0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write what ``src`` holds from ``offset`` on to ``remote`` at ``offset`` (created, or
    truncated, when ``offset`` is 0); the size written up to. ``src`` is closed."""
    pending: set[asyncio.Future[int]] = set()
    position = offset
    try:
        mode = "r+b" if offset else "wb"
        write = min(WRITE, sftp.limits.max_write_len or WRITE)  # never above the server's
        # block_size None (documented): each write is one request, as cut here.
        async with sftp.open(remote, mode, encoding=None, block_size=None) as dst:
            while pieces := await src.read(hasher, write):
                await _fault_pause()
                for data in pieces:
                    while len(pending) >= DEPTH:
                        done, pending = await asyncio.wait(pending, return_when="FIRST_COMPLETED")
                        for task in done:
                            task.result()
                    task = asyncio.ensure_future(dst.write(data, position))
                    if progress is not None:
                        task.add_done_callback(_reporter(progress, len(data)))
                    pending.add(task)
                    position += len(data)
            if pending:
                await asyncio.gather(*pending)
                pending.clear()
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        await src.close()
    return position


def _reporter(progress: Callable[[int], None], size: int) -> Callable[[asyncio.Future[int]], None]:
    """A write request's done-callback: its bytes reported once they are written."""

    def done(task: asyncio.Future[int]) -> None:
        if not task.cancelled() and task.exception() is None:
            progress(size)

    return done


async def local_write(
    src: BlockSource,
    target: Path,
    hasher: Hasher,
    *,
    offset: int = 0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """:func:`sftp_write` for a node root on this machine (the demo's ``LocalNodes``)."""
    position = offset
    try:
        with open(target, "r+b" if offset else "wb") as dst:
            dst.seek(offset)
            while True:
                await _fault_pause()
                pieces = await src.read(hasher)
                if not pieces:
                    break
                for piece in pieces:
                    await asyncio.to_thread(dst.write, piece)
                    position += len(piece)
                    if progress is not None:
                        progress(len(piece))
    finally:
        await src.close()
    return position

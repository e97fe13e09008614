"""A completed stack's thumbnail (STIFF's TIFF) as the console shows it, read where it is.

Like the log tail, the file is read from the stack's node through the executor (its SFTP
session, or the root itself on this machine); only a stack without a node is read here.
Trouble is returned in ``error``, never raised: the detail screen shows it in place of the
picture.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spica_core.executor.agents import AgentExecutor

#: A thumbnail larger than this is not fetched (STIFF's are a few hundred kB).
MAX_THUMBNAIL_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Thumbnail:
    stack: str
    node: str | None
    path: str | None
    data: bytes | None = None
    error: str | None = None


def _read_here(path: str, limit: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes")
    return data


async def fetch_thumbnail(
    executor: AgentExecutor,
    stack: str,
    node: str | None,
    path: str | None,
    limit: int = MAX_THUMBNAIL_BYTES,
) -> Thumbnail:
    """The bytes of ``stack``'s thumbnail at ``path`` on ``node``."""
    from spica_core.errors import SpicaError
    from spica_core.executor import ProtocolError

    if not path:
        return Thumbnail(stack, node, path, error="no thumbnail recorded")
    try:
        if node is None:
            if not Path(path).is_file():
                return Thumbnail(stack, node, path, error=f"{path}: no node holds it here")
            data = await asyncio.to_thread(_read_here, path, limit)
        else:
            data = await executor.read_file(node, path, limit)
    except ProtocolError as exc:
        return Thumbnail(stack, node, path, error=f"node {node}: {exc.message}")
    except (SpicaError, OSError, ValueError) as exc:
        return Thumbnail(stack, node, path, error=str(exc))
    except Exception as exc:  # node trouble of any kind: shown, never raised
        return Thumbnail(stack, node, path, error=f"node {node}: {exc}")
    return Thumbnail(stack, node, path, data)

"""Who and when on this node: host name, boot id, whether a recorded pid still runs, and the
one time format on the wire.

A pid alone names a process only on its host and during its boot: records carry all three, so
a claim or lock left before a reboot or on another host is never taken for a live one.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def iso_utc(timestamp: float | None = None) -> str:
    """ISO 8601 UTC with a ``Z``, to the millisecond: the one time format on the wire."""
    moment = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hostname() -> str:
    return socket.gethostname()


@lru_cache(maxsize=1)
def boot_id() -> str:
    """This boot's id: a pid recorded before a reboot must never be taken for a live one."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def pid_alive(pid: Any, host: Any, boot: Any) -> bool:
    """Whether ``pid`` recorded on ``host`` during boot ``boot`` still runs.

    A pid from another host or another boot may have been reused, so it counts as dead;
    EPERM means the process exists under another user.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if host != hostname() or boot != boot_id():
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (ProcessLookupError, OSError, OverflowError):
        return False
    return True

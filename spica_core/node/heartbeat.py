"""``daemon.heartbeat``: rewritten by the daemon on a timer; its mtime proves the daemon alive."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spica_core.node.files import StatCache
from spica_core.node.host import hostname, iso_utc
from spica_core.node.layout import NodeLayout
from spica_core.node.records import HeartbeatRecord, read_record, shallow_dict, write_record


@dataclass(frozen=True)
class Heartbeat:
    pid: int | None
    host: str | None
    time: str | None
    age_seconds: float
    malformed: str | None

    def to_wire(self) -> dict[str, Any]:
        return shallow_dict(self)


def read_heartbeat(
    root: Path, now: float | None = None, cache: StatCache | None = None
) -> Heartbeat | None:
    """The daemon heartbeat, None when there is none; a garbled one still has an age.

    ``cache`` keeps the parsed record while the file's stat signature is unchanged."""
    try:
        path = NodeLayout(root).heartbeat_file()
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    age = round((now if now is not None else datetime.now(UTC).timestamp()) - st.st_mtime, 3)

    def read(p: Path) -> tuple[HeartbeatRecord | None, str | None]:
        return read_record(p, HeartbeatRecord)

    record, why = cache.get(path, read, st) if cache else read(path)
    if record is None:
        return Heartbeat(None, None, None, age, why)
    return Heartbeat(record.pid, record.host, record.time, age, None)


def write_heartbeat(root: Path, pid: int | None = None) -> None:
    """Refresh the heartbeat (the daemon calls this on a timer)."""
    record = HeartbeatRecord(pid if pid is not None else os.getpid(), hostname(), iso_utc())
    write_record(NodeLayout(root).heartbeat_file(), record)

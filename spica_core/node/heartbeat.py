"""``daemon.heartbeat``: rewritten by the daemon on a timer; its mtime proves the daemon alive."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from spica_core.node.files import StatCache
from spica_core.node.host import hostname, iso_utc
from spica_core.node.layout import NodeLayout
from spica_core.node.protocol import Heartbeat, HeartbeatRecord
from spica_core.node.records import read_record, write_record


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
        return Heartbeat(pid=None, host=None, time=None, age_seconds=age, malformed=why)
    return Heartbeat(pid=record.pid, host=record.host, time=record.time, age_seconds=age)


def write_heartbeat(root: Path, pid: int | None = None) -> None:
    """Refresh the heartbeat (the daemon calls this on a timer)."""
    record = HeartbeatRecord(
        pid=pid if pid is not None else os.getpid(), host=hostname(), time=iso_utc()
    )
    write_record(NodeLayout(root).heartbeat_file(), record)

"""The records a node keeps in its files: typed, read tolerantly, written atomically.

Queue records (launch, claim, error), locks, removals and the heartbeat are small JSON
documents written by other processes, possibly half-written or hand-edited: the readers report
them as malformed (naming the field), never crash. ``progress`` and ``attempt`` hold one
integer each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from types import NoneType
from typing import Any, TypeVar, get_args, get_type_hints

from spica_core.node.files import PRIVATE_MODE, atomic_write, one_line, read_small
from spica_core.node.host import pid_alive
from spica_core.node.layout import NodeLayout, OutsideRoot

R = TypeVar("R", bound="_Record")


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def shallow_dict(obj: Any) -> dict[str, Any]:
    """A dataclass of JSON scalars as a dict: a shallow copy, not ``asdict``'s recursive deep
    copy (a status poll puts a record of every pending and failed stack on the wire)."""
    return {name: getattr(obj, name) for name in _field_names(type(obj))}


@cache
def _field_types(cls: type) -> dict[str, tuple[tuple[type, ...], bool]]:
    """Field name -> (accepted JSON types, may be null), from the dataclass annotations."""
    hints = get_type_hints(cls)
    out: dict[str, tuple[tuple[type, ...], bool]] = {}
    for f in fields(cls):
        args = get_args(hints[f.name]) or (hints[f.name],)
        out[f.name] = (tuple(a for a in args if a is not NoneType), NoneType in args)
    return out


class _Record:
    """A JSON queue record: typed fields, tolerant parsing, atomic writing."""

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        """Build from parsed JSON, or raise ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        values: dict[str, Any] = {}
        for name, (accepted, optional) in _field_types(cls).items():
            value = data.get(name)
            if value is None:
                if not optional:
                    raise ValueError(f"missing {name!r}")
            elif isinstance(value, bool) or not isinstance(value, accepted):
                raise ValueError(f"{name!r} has the wrong type ({type(value).__name__})")
            values[name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


@dataclass(frozen=True)
class LaunchRecord(_Record):
    """Content of ``<stack>.spica``; legacy launchers leave the file empty."""

    stack: str
    priority: int
    launched_at: str
    by: str


@dataclass(frozen=True)
class ClaimRecord(_Record):
    """Content of ``<stack>.processing``: who runs it, so a stale claim can be told apart."""

    pid: int
    host: str
    boot_id: str
    started_at: str
    daemon_pid: int | None = None
    #: The daemon's claim counter of this stack: ``stack_run.attempt`` of the lines it runs.
    attempt: int | None = None
    #: The launch it claimed (priority, time, by whom), so releasing or recovering the claim
    #: can put the same ``.spica`` back.
    priority: int | None = None
    launched_at: str | None = None
    launched_by: str | None = None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.host, self.boot_id)

    def daemon_alive(self) -> bool | None:
        if self.daemon_pid is None:
            return None
        return pid_alive(self.daemon_pid, self.host, self.boot_id)


@dataclass(frozen=True)
class ErrorRecord(_Record):
    """Content of ``<stack>.error``: where a requeue resumes and what the operator sees."""

    line: int | None
    exit_code: int | None
    message: str
    log_tail: str | None = None


@dataclass(frozen=True)
class LockRecord(_Record):
    """Content of ``locks/<partition>.qfin.lock``; legacy locks are empty files."""

    pid: int
    host: str
    boot_id: str
    acquired_at: str | None = None
    stack: str | None = None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.host, self.boot_id)


@dataclass(frozen=True)
class RemovedRecord(_Record):
    """Content of ``removed/<stack>.json``: who removed the stack, so a second operator
    removing it at the same time is told rather than told nothing happened."""

    stack: str
    by: str
    removed_at: str
    #: The node state it was removed from, and its dbspica id when the remover knew it.
    state: str
    stack_id: int | None = None


@dataclass(frozen=True)
class HeartbeatRecord(_Record):
    """Content of ``daemon.heartbeat``; its freshness is the file's mtime, not ``time``."""

    pid: int
    host: str
    time: str


def read_record(
    path: str | Path, kind: type[R], *, empty_ok: bool = False
) -> tuple[R | None, str | None]:
    """``(record, None)``, ``(None, None)`` for an allowed empty file, or ``(None, why)``.

    Never raises for bad content; a missing file is ``(None, "missing")`` since callers only
    read files they have just listed (the daemon may have renamed it meanwhile).
    """
    try:
        data = read_small(path)
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, one_line(exc)
    if not data.strip():
        return None, (None if empty_ok else "empty file")
    try:
        return kind.from_dict(json.loads(data)), None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "not JSON"
    except ValueError as exc:
        return None, str(exc)


def record_bytes(record: _Record) -> bytes:
    """A record as it is written: one line of UTF-8 JSON."""
    return json.dumps(record.to_dict(), ensure_ascii=False).encode("utf-8") + b"\n"


def write_record(
    path: Path,
    record: _Record,
    *,
    exclusive: bool = False,
    mode: int = PRIVATE_MODE,
    durable: bool = True,
) -> None:
    """Write ``record`` to ``path`` through :func:`atomic_write` (see there for the options)."""
    atomic_write(path, record_bytes(record), exclusive=exclusive, mode=mode, durable=durable)


def read_progress(path: Path) -> tuple[int | None, str | None]:
    """The last line that succeeded: ``(n, None)``, ``(None, None)`` if absent, or a reason."""
    try:
        data = read_small(path, 4096)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"progress: {one_line(exc)}"
    text = data.decode("ascii", errors="replace").strip()
    if not text:
        return 0, None
    if not text.isdigit():
        return None, "progress: not an integer"
    return int(text), None


def read_attempt(layout: NodeLayout, stack: str) -> tuple[int | None, str | None]:
    """The stack's claim counter: ``(n, None)``, ``(None, None)`` before any claim, or
    ``(None, why)`` when the file is unreadable."""
    try:
        path = layout.attempt_file(stack)
    except OutsideRoot as exc:
        return None, f"attempt: {exc.reason}"
    value, why = read_progress(path)  # the same format: one non-negative integer
    return value, why and why.replace("progress", "attempt")

"""The records a node keeps in its files: typed, read tolerantly, written atomically.

Queue records (launch, claim, error), locks, removals and the heartbeat are small JSON
documents written by other processes, possibly half-written or hand-edited: the readers report
them as malformed (naming the field), never crash. ``progress`` and ``attempt`` hold one
integer each.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from spica_core.node.files import PRIVATE_MODE, atomic_write, one_line, read_small
from spica_core.node.host import pid_alive
from spica_core.node.layout import NodeLayout, OutsideRoot
from spica_core.node.protocol import ClaimRecord, LockRecord, describe

R = TypeVar("R", bound=msgspec.Struct)

_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_MISSING = re.compile(r"Object missing required field `([^`]*)`")
_WRONG = re.compile(r"Expected `[^`]*`, got `([^`]*)` - at `\$\.([^`]*)`")


def claim_alive(claim: ClaimRecord | LockRecord) -> bool:
    """Whether the claim's (or lock's) process still runs on this boot of its host."""
    return pid_alive(claim.pid, claim.host, claim.boot_id)


def daemon_alive(claim: ClaimRecord) -> bool | None:
    """Whether the daemon that made the claim still runs; None when the claim names none."""
    if claim.daemon_pid is None:
        return None
    return pid_alive(claim.daemon_pid, claim.host, claim.boot_id)


def _why(exc: msgspec.DecodeError) -> str:
    """Why a record file does not fit its type, naming the field."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return "not JSON"
    if missing := _MISSING.fullmatch(text):
        return f"missing {missing[1]!r}"
    if wrong := _WRONG.fullmatch(text):
        return f"{wrong[2]!r} has the wrong type ({wrong[1]})"
    if text.startswith("Expected `object`"):
        return "not a JSON object"
    return describe(exc)


def decode_record(data: bytes, kind: type[R]) -> R:
    """``kind`` from a record file's bytes; raises ValueError saying why (the field named)."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise ValueError(_why(exc)) from None


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
        return decode_record(data, kind), None
    except ValueError as exc:
        return None, str(exc)


def record_bytes(record: msgspec.Struct) -> bytes:
    """A record as it is written: one line of UTF-8 JSON, spaced as it always was (operators
    and older tools read these files)."""
    return json.dumps(msgspec.to_builtins(record), ensure_ascii=False).encode("utf-8") + b"\n"


def write_record(
    path: Path,
    record: msgspec.Struct,
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

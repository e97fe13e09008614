"""The QualityFITS-like per-image report: ``<image>.qfin.json`` beside a QFin unit's outputs.

Written last and atomically, so its presence means the image was measured whole; read back
strictly (msgspec, no type coercion), an error naming the file and the field at fault.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from spica_core.errors import SpicaError
from spica_core.node.files import atomic_write
from spica_core.node.protocol import describe
from spica_core.qfin.result import QfinReport

#: Reports are world-readable: the console and PIs' views read them on the node.
REPORT_MODE = 0o644
#: A report of 36 CCDs is about 10 kB; anything much larger is not a report.
MAX_REPORT_BYTES = 4 * 1024 * 1024


#: Strict: no coercion (a seeing written as "0.8" is refused, naming the field).
_decoder = msgspec.json.Decoder(QfinReport, strict=True)


class ReportUnreadable(SpicaError):
    """A QFin report that is missing, too large, not JSON, or not a :class:`QfinReport`."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"QFin report {path}: {reason}")


def encode_report(report: QfinReport) -> bytes:
    """The report's bytes: indented JSON (operators read it), ending with a newline."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"


def write_report(path: Path, report: QfinReport) -> None:
    """Write ``report`` to ``path``: readers see no report or the whole one."""
    atomic_write(Path(path), encode_report(report), mode=REPORT_MODE)


def read_report(path: Path) -> QfinReport:
    """The report at ``path``; :class:`ReportUnreadable` naming the field when it does not fit."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        raise ReportUnreadable(path, "missing") from None
    except OSError as exc:
        raise ReportUnreadable(path, exc.strerror or str(exc)) from None
    if len(data) > MAX_REPORT_BYTES:
        raise ReportUnreadable(path, f"larger than {MAX_REPORT_BYTES} bytes")
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ReportUnreadable(path, describe(exc)) from None
    except msgspec.DecodeError:
        raise ReportUnreadable(path, "not JSON") from None

"""A completed stack's results (``stack_result``): what ``spica stack show``, the console's
stack detail and ``spica compare`` read.

The paths are where the files are on the stack's node: node internals, which a runid scope
does not see (:meth:`spica_core.read_model.scope.Scope.stack_detail` drops them).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.db.models import StackResult
from spica_core.reports import iso

#: The files a stack produced, as paths on its node.
RESULT_PATHS = ("coadd_path", "weight_path", "catalog_path", "thumbnail_path")
#: The figures measured, in the order the CLI and the console show them: (column, label,
#: format of the value with its unit).
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("scamp_inputs", "SCAMP files", "{:d}"),
    ("swarp_inputs", "SWarp files", "{:d}"),
    ("exptime", "exposure", "{:.0f} s"),
    ("seeing", "median seeing", '{:.2f}"'),
    ("completeness", "completeness (80 %)", "{:.2f} mag"),
    ("scamp_internal_rms", "SCAMP internal RMS", '{:.3f}"'),
    ("scamp_external_rms", "SCAMP external RMS", '{:.3f}"'),
    ("background", "median background", "{:.1f} ADU"),
    ("background_rms", "background RMS", "{:.2f} ADU"),
    ("sources", "sources", "{:d}"),
    ("zero_point", "zero point", "{:.3f} mag"),
)
RESULT_FIGURES = tuple(key for key, _, _ in FIGURES)
LABELS = {key: label for key, label, _ in FIGURES}
_FORMATS = {key: fmt for key, _, fmt in FIGURES}


def format_figure(key: str, value: float | int | None) -> str:
    """``value`` of figure ``key`` with its unit; ``-`` when not measured."""
    if value is None:
        return "-"
    fmt = _FORMATS.get(key, "{}")
    if "d}" in fmt:
        value = int(value)
    return fmt.format(value)


def format_seconds(seconds: float) -> str:
    """Seconds as the operator reads them: ``42.0 s``, ``3 min 05 s``, ``2 h 10 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def result_json(result: StackResult) -> dict[str, Any]:
    """The row as JSON: paths, figures, seconds per step, when it was recorded."""
    out: dict[str, Any] = {key: getattr(result, key) for key in RESULT_PATHS + RESULT_FIGURES}
    out["step_seconds"] = dict(result.step_seconds or {})
    out["recorded_at"] = iso(result.recorded_at)
    return out


def stack_result(session: Session, stack_id: int) -> dict[str, Any] | None:
    """The results of stack ``stack_id`` as JSON; None until it has been recorded."""
    row = session.scalars(select(StackResult).where(StackResult.stack_id == stack_id)).first()
    return None if row is None else result_json(row)


def hide_paths(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """``result`` without its node paths (a runid scope sees the figures only)."""
    if result is None:
        return None
    return {**result, **dict.fromkeys(RESULT_PATHS)}

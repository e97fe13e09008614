"""Byte sizes, read and shown: the one parser of sizes like ``"652 GB"`` (configuration) and
the one formatter every face uses (plans, preflight reasons, the CLI, the console).

Decimal units throughout, as the disks are sold and as the seed shows them: ``1 GB`` is
10**9 bytes; a parsed size may also be binary (``"1.5 TiB"``).
"""

from __future__ import annotations

import re
from typing import Any

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like ``"650 GB"`` / ``"1.5TiB"``."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes or a string like '650 GB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            number, unit = float(m.group(1)), m.group(2).upper()
            base = unit[:1] if unit[:1] in _UNITS else ""
            factor = 1024 ** "KMGTP".index(base) * 1024 if "I" in unit and base else _UNITS[base]
            return int(number * factor)
    raise ValueError(f"expected a size in bytes or a string like '650 GB', got {value!r}")


def human_bytes(n: int | None) -> str:
    """``512 B``, ``500.0 KB``, ``1.5 GB`` … up to TB; ``-`` for an unknown size."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def gigabytes(n: int) -> str:
    """Bytes in GB with three decimals, as the seed's DataTransfer page shows them:
    ``433.107 GB``."""
    return f"{n / 1e9:.3f} GB"


def distribution_cell(files: int, percent: float) -> str:
    """A runid's share of files on one node, as the seed's distribution shows it:
    ``100.0% [2 files]``."""
    return f"{percent:.1f}% [{files} file{'s' if files != 1 else ''}]"

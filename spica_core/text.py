"""Text from stacks, nodes and problems made safe to show on a terminal.

Command lines, error messages, problem messages and logs come from files and processes
anyone with a stack could write: an ``ESC ] 0 ; … BEL`` in a command would retitle the
operator's terminal, an ``ESC [ 2 J`` clear it, and worse sequences exist. Every face shows
such text through :func:`printable`, which writes each control character visibly instead
(``\\x1b``), so what reaches the terminal is only what it says.
"""

from __future__ import annotations

from spica_core.errors import UsageError

#: C0 controls, DEL and C1 controls (0x80-0x9f: 0x9b is a one-byte CSI) -> ``\xNN``.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ONE_LINE = str.maketrans(_CONTROLS)
_LINES = str.maketrans({c: v for c, v in _CONTROLS.items() if c not in (0x09, 0x0A)})


def printable(text: str | None, *, lines: bool = False) -> str:
    """``text`` with every control character escaped as ``\\xNN`` (None gives "").

    ``lines`` keeps newlines and tabs (a log, a plan); otherwise they are escaped too, so a
    table cell stays one line.
    """
    if not text:
        return ""
    return text.translate(_LINES if lines else _ONE_LINE)


def one_line(text: str | None) -> str:
    """``text`` on one line for a table cell: runs of whitespace become one space, then
    :func:`printable`."""
    return printable(" ".join((text or "").split()))


def require_utf8(value: str, what: str) -> str:
    """``value`` unchanged when it can be stored and matched as UTF-8; else UsageError
    naming ``what``. Bytes that are not UTF-8 on a command line reach Python as lone
    surrogates, which every driver and RE2 would refuse with a traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise UsageError(f"{what} {shown!r}: not valid UTF-8 text") from None
    return value

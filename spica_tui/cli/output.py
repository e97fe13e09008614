"""Rendering for the CLI: JSON on stdout, tables for people, messages on stderr.

Text from dbspica and the nodes (stack errors, commands, problem messages) is never taken
as rich markup and never reaches the terminal with its control characters: table cells given
as ``str``, :func:`error` and :func:`note` go through :func:`spica_core.text.printable`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.style import StyleType
from rich.table import Table
from rich.text import Text

from spica_core.text import printable


def _width() -> int | None:
    """The terminal's width; wide when piped, so tables and plans are not folded at 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    return None if sys.stdout.isatty() else 200


#: How a security problem (a node's host key does not match) is shown: apart from the
#: hardware problems' red.
SECURITY_STYLE = "bold white on red"


def _consoles() -> tuple[Console, Console]:
    return (
        Console(highlight=False, soft_wrap=False, width=_width()),
        Console(stderr=True, highlight=False, soft_wrap=True),
    )


stdout, stderr = _consoles()


def renew_consoles() -> None:
    """Set :data:`stdout` and :data:`stderr` up again, in place, for the streams and the
    environment as they are now: what a new process would see (a command run in-process
    under test). The commands' ``from ... import stdout`` keep working."""
    for console, fresh in zip((stdout, stderr), _consoles(), strict=True):
        console.__dict__.update(fresh.__dict__)


#: C1 controls, which ``json.dumps(ensure_ascii=False)`` leaves raw (C0 it escapes itself).
_JSON_C1 = str.maketrans({c: f"\\u{c:04x}" for c in range(0x80, 0xA0)})


def emit_json(data: Any) -> None:
    """``data`` as JSON; C1 controls as ``\\u0080``-style escapes (same JSON, safe to view)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False).translate(_JSON_C1)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    stderr.print(Text.assemble(("spica: error:", "bold red"), " ", printable(message, lines=True)))


def note(message: str) -> None:
    stderr.print(Text(printable(message, lines=True)))


class SafeTable(Table):
    """A table whose ``str`` cells are shown as they are: no markup, controls escaped.
    Styled cells are given as :class:`~rich.text.Text`."""

    def add_row(
        self,
        *renderables: RenderableType | None,
        style: StyleType | None = None,
        end_section: bool = False,
    ) -> None:
        cells = [Text(printable(c, lines=True)) if isinstance(c, str) else c for c in renderables]
        super().add_row(*cells, style=style, end_section=end_section)


def table(*columns: str, title: str | None = None) -> Table:
    t = SafeTable(title=title, box=None, header_style="bold", pad_edge=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    return t


class UnitPlan(Protocol):
    """What ``spica qfin`` and ``spica auto`` plan and then add: units, some not added."""

    @property
    def ok(self) -> bool: ...

    def to_json(self) -> dict[str, Any]: ...


P = TypeVar("P", bound=UnitPlan)


def check_launch(*, launch: bool, dry_run: bool) -> None:
    from spica_core.errors import UsageError

    if launch and dry_run:
        raise UsageError("--launch and --dry-run exclude each other")


def finish_plan(
    plan: P, show: Callable[[P], None], *, as_json: bool, unreachable: Sequence[str] = ()
) -> None:
    """Print a unit plan (JSON, or ``show``'s table and notes) and exit as the commands
    say: 3 when a node could not be reached (``unreachable``), 1 when a unit was not added
    or launched."""
    if as_json:
        emit_json(plan.to_json())
    else:
        show(plan)
    if unreachable:
        raise typer.Exit(3)
    if not plan.ok:
        raise typer.Exit(1)


def age(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 0:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def service_logging(name: str, *, verbose: bool = False) -> None:
    """Log lines on stderr for a foreground service (``spica watch``, ``spica transfer
    watch``): systemd's journal keeps them; asyncssh's own chatter only from warnings."""
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)

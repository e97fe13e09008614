"""The header: which cluster, whether dbspica answers, who polls the nodes (a monitor, or
this console) and how old the data on screen is."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual.screen import Screen
from textual.widgets import Static

from spica_core.cluster_snapshot import Liveness
from spica_core.console_data import ConsoleSnapshot
from spica_core.text import one_line
from spica_tui.console.panels._common import age, hms

if TYPE_CHECKING:
    from spica_tui.console.app import SpicaConsole

#: A poll older than this many refresh intervals is shown as stale.
STALE_POLLS = 3


class HeaderPanel(Static):
    DEFAULT_CSS = """
    HeaderPanel {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    """

    _shown: Text | None = None

    def show(
        self, snap: ConsoleSnapshot, now: datetime, *, interval: float, read_only: bool
    ) -> None:
        # Docked and one row high: a new text never needs the screen laid out again.
        text = render_header(snap, now, interval=interval, read_only=read_only)
        if text != self._shown:
            self._shown = text
            self.update(text, layout=False)


def show_header(screen: Screen[Any], snap: ConsoleSnapshot | None = None) -> bool:
    """Show ``snap`` (default: the poller's last) in ``screen``'s header; False when the
    screen has none mounted: a poll or the clock may come while a screen is still being
    composed, or already torn down as the console quits."""
    app = cast("SpicaConsole", screen.app)
    headers = screen.query(HeaderPanel)
    for header in headers:
        header.show(
            snap or app.poller.snapshot,
            app.clock(),
            interval=app.poller.interval,
            read_only=app.read_only,
        )
    return bool(headers)


def render_header(
    snap: ConsoleSnapshot, now: datetime, *, interval: float, read_only: bool
) -> Text:
    sep = ("  │  ", "dim")
    text = Text.assemble(("SPICA ", "bold"), (snap.cluster_name, "bold"), sep)
    nodes = snap.nodes
    if snap.cluster is None:
        text.append("nodes: waiting for the first poll", "yellow")
    else:
        up = sum(1 for n in nodes if n.liveness.reachable)
        down = [n.name for n in nodes if n.liveness is Liveness.DOWN]
        waiting = sum(1 for n in nodes if n.liveness is Liveness.UNKNOWN)
        text.append(f"nodes {up}/{len(nodes)} up", "green" if up == len(nodes) else "")
        if down:
            shown = ", ".join(down[:4]) + ("…" if len(down) > 4 else "")
            text.append(f", {len(down)} down ({shown})", "bold red")
        if waiting:
            text.append(f", {waiting} not answered yet", "yellow")
    text.append_text(Text.assemble(sep))
    if snap.db is None and snap.db_error is None:
        text.append("dbspica: waiting", "yellow")
    elif snap.db_error is not None:
        text.append("dbspica UNREACHABLE", "bold red")
        text.append(f" since {hms(snap.db_error_since)}: {one_line(snap.db_error)}", "red")
        if snap.db is not None:
            text.append(f" — data as of {hms(snap.db.read_at)}", "red")
    else:
        text.append("dbspica ok", "green")
        text.append(f" {snap.db_url}", "dim")
    text.append_text(Text.assemble(sep))
    polled = (now - snap.taken_at).total_seconds()
    monitor = snap.monitor
    if snap.cluster is None and snap.db is None:
        text.append("no data yet", "yellow")
    elif monitor is not None:
        # The node figures are the monitor's: their age is its last poll, not the console's.
        label = monitor.identity.label
        if monitor.fresh(now):
            text.append(f"monitor {label}, {age(now, monitor.heartbeat_at)} ago", "dim")
        else:
            text.append(
                f"monitor {label} STALE: last poll {age(now, monitor.heartbeat_at)} ago",
                "bold red",
            )
    elif polled > STALE_POLLS * interval + 1:
        text.append(f"polling nodes, STALE: last poll {age(now, snap.taken_at)} ago", "bold red")
    else:
        text.append(f"polling nodes, {age(now, snap.taken_at)} ago", "dim")
    if read_only:
        text.append_text(Text.assemble(sep))
        text.append("READ-ONLY", "bold reverse yellow")
    return text

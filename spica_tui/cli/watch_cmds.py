"""``spica watch``: the headless cluster monitor, as a long-lived service (systemd-friendly).

Thin: parse, hand :class:`spica_core.monitor.Monitor` the configuration and dbspica, run it
in the foreground (no daemonizing), log to stderr.
"""

from __future__ import annotations

from typing import Annotated

import typer

from spica_tui.cli.context import state
from spica_tui.cli.output import service_logging


def watch(
    ctx: typer.Context,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            "-i",
            min=0.1,
            metavar="SECONDS",
            help="Seconds between polls (default: [monitor].interval, else "
            "[console].refresh_interval).",
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one poll, then exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug lines.")] = False,
) -> None:
    """Poll every node each interval: liveness transitions and their problem rows, one mail
    to the operators per node-down and per back-to-life, and the nodes' figures in dbspica
    (consoles then read them instead of opening SSH connections of their own).

    Runs in the foreground until SIGTERM or Ctrl-C, logging to stderr; the poll under way
    ends first. Exit codes: 0 stopped cleanly; 2 configuration error; 3 dbspica unreachable
    at start.
    """
    import asyncio

    from spica_core.monitor import Monitor

    st = state(ctx)
    config = st.config
    engine = st.engine()
    service_logging("spica-watch", verbose=verbose)
    monitor = Monitor(config, engine, interval=interval)
    try:
        code = asyncio.run(monitor.run(once=once, handle_signals=True))
    finally:
        engine.dispose()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)

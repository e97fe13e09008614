"""``spica console [--read-only]``: the Textual operations console.

Thin: load the configuration, check dbspica, run :mod:`spica_tui.console`. Textual is
imported here, inside the command, never when the CLI starts (``spica --help`` stays light).
A dbspica that does not answer at start is not fatal — the console shows it unreachable and
keeps polling — but one without SPICA's schema is (exit 3, as for every command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from spica_tui.cli.context import state

if TYPE_CHECKING:
    from spica_core.config import SpicaConfig
    from spica_core.demo.layout import DemoPaths
    from spica_tui.console.app import SpicaConsole

ReadOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--read-only",
        help="Watch only: launch, requeue, unlock and remove are not offered.",
    ),
]


def console(ctx: typer.Context, read_only: ReadOnlyOpt = False) -> None:
    """The operations console: nodes, disks, runids, stacks, problems; act on stacks."""
    run(state(ctx).config, read_only=read_only)


def run(config: SpicaConfig, *, read_only: bool, demo: DemoPaths | None = None) -> None:
    """Check dbspica, then run the console on ``config`` until the operator quits
    (``demo``: the demo's console, which also tells the story's news)."""
    from spica_tui.console import terminal_probe

    probe = terminal_probe.start()  # the terminal answers while the rest loads
    try:
        app = _console(config, read_only=read_only, demo=demo)
    finally:
        # The app must not take the terminal while the answers are read; on a refusal, the
        # terminal is never left to a thread in the middle of a question (raw mode).
        probe.join()
    app.run()


def _console(config: SpicaConfig, *, read_only: bool, demo: DemoPaths | None) -> SpicaConsole:
    from spica_core.db.engine import check_reachable, make_engine
    from spica_core.db.schema import require_current
    from spica_core.errors import DatabaseUnavailable, SchemaError
    from spica_core.operations import operator_name
    from spica_tui.cli.output import note

    operator = operator_name()
    engine = make_engine(config.db)
    try:
        check_reachable(engine)
        require_current(engine)
    except SchemaError:
        engine.dispose()
        raise
    except DatabaseUnavailable as exc:
        note(f"warning: {exc}; the console starts and shows it unreachable")

    from spica_tui.console.app import SpicaConsole
    from spica_tui.console.refresh import ConsoleBackend

    # Read-only: the backend is built without an operations API, not merely gated.
    backend = ConsoleBackend(config, engine, read_only=read_only)
    if demo is not None:
        from spica_tui.console.demo_story import DemoConsole

        return DemoConsole(config, backend, operator=operator, paths=demo)
    return SpicaConsole(config, backend, operator=operator)


def register(app: typer.Typer) -> None:
    app.command("console")(console)

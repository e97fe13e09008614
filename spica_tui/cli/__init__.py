"""The ``spica`` command line (DESIGN §9): thin typer commands over ``spica_core``.

Data goes to stdout, diagnostics to stderr. Exit codes: 0 done; 1 an operation failed or
only partly applied; 2 usage or configuration error; 3 dbspica or a node unreachable.
Heavy libraries (textual, astropy, asyncssh, even sqlalchemy) are imported by the commands
that need them, never at start-up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any

import typer
import typer.main

from spica_tui.cli import (
    apps_cmds,
    auto_cmds,
    compare_cmds,
    console_cmds,
    daemon_cmds,
    db_cmds,
    demo_cmds,
    image_cmds,
    ingest_cmds,
    node_cmds,
    ops_cmds,
    qfin_cmds,
    report_cmds,
    stack_cmds,
    stack_inject_cmds,
    transfer_cmds,
    transfer_run_cmds,
    watch_cmds,
)
from spica_tui.cli.context import CliState, state

app = typer.Typer(
    name="spica",
    help="SPICA: operations console and engine for astronomical image-processing clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from spica_core import __version__

        typer.echo(f"spica {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="Configuration file (else $SPICA_CONFIG, ./spica.toml, the user config dir).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    state(ctx).config_path = config


app.add_typer(db_cmds.app, name="db")
app.add_typer(demo_cmds.app, name="demo")
app.add_typer(node_cmds.app, name="node")
app.add_typer(transfer_cmds.app, name="transfer")
transfer_run_cmds.register(transfer_cmds.app)
report_cmds.register(app)
daemon_cmds.register(app)
ops_cmds.register(app)
console_cmds.register(app)
watch_cmds.register(app)
ingest_cmds.register(app)
qfin_cmds.register(app)
apps_cmds.register_commands(app)
image_cmds.register(app)
auto_cmds.register(app)
stack_cmds.register(app)
stack_inject_cmds.register(app)
compare_cmds.register(app)


@cache
def command() -> Callable[..., Any]:
    """The click command tree, built once per process. Typer derives it from every
    command's signature (a few hundred annotations evaluated, some 50 ms), which an
    in-process caller running several commands would otherwise pay at each one;
    ``app(...)`` builds it anew at every call. Click keeps no state between invocations."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns the engine's typed errors into a message and an exit code.

    dbspica failing in the middle of a command (made read-only, deleted, the server gone)
    is reported like dbspica unreachable at its start: masked URL, reason, exit code 3.
    """
    from spica_core.errors import SpicaError

    cli = CliState()
    try:
        try:
            command()(args=argv, prog_name="spica", obj=cli)
        except Exception as exc:
            translated = cli.db_failure(exc)
            if translated is None:
                raise
            raise translated from None
    except SpicaError as exc:
        from spica_tui.cli.output import error

        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)

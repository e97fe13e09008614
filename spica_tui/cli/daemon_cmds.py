"""``spica daemon``, ``spica check`` and ``spica stack add``: the node side of the pipeline.

Thin: parse, call :mod:`spica_core.daemon` / :mod:`spica_core.stack_add`, render. ``daemon``
and ``check`` run on a node (its spica root is local); ``stack add`` where the node's root
is reachable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from spica_core.db import INT_MAX, INT_MIN
from spica_tui.cli.context import state
from spica_tui.cli.output import emit_json, note, stdout, table

NodeOpt = Annotated[
    str | None,
    typer.Option(
        "--node",
        "-n",
        metavar="NAME",
        help="This node's name in [[nodes]] (default: the node whose host or root is here).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def daemon(ctx: typer.Context, node: NodeOpt = None) -> None:
    """Run this node's daemon until SIGTERM or Ctrl-C: claims the queued stacks, runs them.

    Exit codes: 0 stopped cleanly; 2 configuration error (unknown node, no spica root).
    """
    import logging

    from spica_core.daemon.service import DaemonService, local_node

    config = state(ctx).config
    node_config = local_node(config, node)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {node_config.name} %(levelname)s %(message)s",
    )
    service = DaemonService(config, node_config)
    service.install_signal_handlers()
    raise typer.Exit(service.run())


def check(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Stack name.")],
    node: NodeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the daemon's preflight for one stack here: disk space, application checksums,
    inputs, stack files. When every check passes, a stack waiting after a failed check is
    retried at the daemon's next scan.

    Exit codes: 0 every check passed; 1 a check failed; 2 usage or configuration error.
    """
    from spica_core.daemon.preflight import check_stack
    from spica_core.daemon.service import local_node

    config = state(ctx).config
    result = check_stack(config, local_node(config, node), name)
    if as_json:
        emit_json(result.to_json())
    else:
        t = table("check", "result", "detail")
        for item in result.items:
            verdict = Text("ok") if item.ok else Text("fatal" if item.fatal else "failed", "red")
            t.add_row(item.name, verdict, item.detail)
        stdout.print(t)
        note(f"stack {name} on {result.node}: " + ("ready" if result.ok else "not ready"))
    if not result.ok:
        raise typer.Exit(1)


def stack_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Stack name.")],
    node: Annotated[str, typer.Option("--node", "-n", metavar="NODE", help="Its node.")],
    commands: Annotated[
        Path,
        typer.Option(
            "--commands",
            "-c",
            metavar="FILE",
            help="One shell command per line ('-' for stdin).",
            allow_dash=True,
        ),
    ],
    step: Annotated[str, typer.Option(help="Its step (qfin, image, stack…).")] = "stack",
    priority: Annotated[int, typer.Option(min=INT_MIN, max=INT_MAX, help="Higher runs first.")] = 0,
    partition: Annotated[
        str | None,
        typer.Option(
            metavar="PARTITION",
            help="With --step qfin: the raid partition whose QFin lock it holds while it runs.",
        ),
    ] = None,
    launch: Annotated[
        bool, typer.Option("--launch", help="Launch it at once (audited, as spica launch).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an ad-hoc stack from a command file: its dbspica row (planned) and
    stacks/NAME/commands.sh on the node; --launch then launches it as `spica launch NAME
    --yes` does (audited; a queue file already there is never replaced).

    When the node's root is not on this machine the files go through the node's agent over
    SSH. The command file is at most 1 MiB, a regular file or '-'; CRLF line ends become LF.
    Exit codes: 0 created; 1 the name exists (in dbspica or on the node) or the launch was
    refused; 2 usage or configuration error (bad name; command file empty, binary, too
    large, not a regular file, or with a stray carriage return); 3 dbspica or the node
    unreachable.
    """
    from spica_core.stack_add import add_stack, read_commands_file

    data = read_commands_file(str(commands), sys.stdin.buffer)
    st = state(ctx)
    added = add_stack(
        st.engine(),
        st.config,
        name,
        node,
        data,
        step=step,
        priority=priority,
        partition=partition,
        launch=launch,
        source=f"--commands {commands}",
    )
    if as_json:
        emit_json(added.to_json())
        return
    note(
        f"stack {added.stack} added on {added.node}: {added.lines} lines "
        f"({added.commands} commands), {added.state}"
    )


def register(app: typer.Typer) -> None:
    from spica_tui.cli.report_cmds import stack_app

    app.command("daemon")(daemon)
    app.command("check")(check)
    stack_app.command("add")(stack_add)

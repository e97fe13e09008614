"""``spica node serve``: the agent the console starts on each node over SSH (DESIGN §5)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Commands that run on a node (started there by the console over SSH).",
    no_args_is_help=True,
)


@app.command()
def serve(
    root: Annotated[
        str,
        typer.Option("--root", metavar="PATH", help="The node's spica root (queue/, stacks/ …)."),
    ],
) -> None:
    """Answer JSON-line requests on stdin with one JSON line each on stdout, until EOF."""
    from spica_core.node.agent import run

    raise typer.Exit(run(root))

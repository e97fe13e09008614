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
    import sys
    from pathlib import Path

    path = Path(root)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        sys.stderr.write(f"spica: error: spica root {root} {what}\n")
        raise typer.Exit(2)

    from spica_core.node_agent import serve as serve_agent

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # stdout is the wire: anything printed by accident would desynchronise the client.
    sys.stdout = sys.stderr
    raise typer.Exit(serve_agent(path, stdin, stdout))

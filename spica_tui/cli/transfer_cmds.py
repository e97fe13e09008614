"""``spica transfer …``: DataTransfer from the incoming repositories to the nodes' partitions.

The group is defined here; the planning commands (status, plan, distribution) and the copying
commands (run, watch, history) register themselves on it from their own modules.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="DataTransfer: disk space, placement plans and verified copies of runids to nodes.",
    no_args_is_help=True,
)

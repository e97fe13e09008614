"""The ``spica`` executable.

``spica node serve`` is started by the console on every node at every connection, often on
a hundred nodes at once: it goes straight to the agent (the standard library and
``spica_core`` only), not through the typer application, whose import costs several times the
agent's own start-up. Everything else, ``spica node serve --help`` included, is the typer CLI.
"""

from __future__ import annotations

import sys

_HELP = frozenset({"-h", "--help"})


def is_agent_command(argv: list[str]) -> bool:
    return argv[:2] == ["node", "serve"] and not _HELP & set(argv)


def main() -> None:
    argv = sys.argv[1:]
    if is_agent_command(argv):
        from spica_core.node.agent import main as agent_main

        sys.exit(agent_main(argv[2:]))
    from spica_tui.cli import main as cli_main

    cli_main()

"""``python -m spica_tui`` is the ``spica`` command."""

from spica_tui.cli import main

main()

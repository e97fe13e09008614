"""``python -m spica_tui`` is the ``spica`` command."""

from spica_tui.entry import main

main()

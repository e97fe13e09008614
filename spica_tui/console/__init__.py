"""The Textual operations console (DESIGN §7): ``spica console`` and ``spica demo``.

Presentation only: the data comes from ``spica_core`` (NodePool snapshots, the dbspica reports
of :mod:`spica_core.console_data`, the operations API). Layout of the package:

* :mod:`.app` — the App: snapshots to screens, operator actions (plan, confirm, apply).
* :mod:`.refresh` — the model: the core calls, and the poller (one poll at a time).
* :mod:`.actions` — the registry of named actions: bindings, help, command palette.
* :mod:`.panels` — one module per dashboard panel; :mod:`.screens` — dashboard, stack
  detail, help; :mod:`.modals` — the plan confirmation.

Importing this package imports no textual: the CLI imports :mod:`.app` inside the command.
"""

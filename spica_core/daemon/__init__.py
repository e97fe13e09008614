"""The node daemon, ``spica daemon`` (DESIGN §6): runs the stacks queued on its node.

One process per node (two on one root are safe: a claim is an exclusive rename). Modules,
each named for what it holds:

* (in the node package, shared with the agent) :mod:`~spica_core.node.stack_files` — the
  per-stack files the daemon reads and writes (``commands.sh`` validation, ``inputs``,
  ``attempt``, ``check.json``, ``running.json``).
* :mod:`~spica_core.daemon.claims` — claim, release, fail, reject and recover by rename.
* :mod:`~spica_core.daemon.preflight` — ``spica check``: disk space, application checksums
  (the application table, cached), inputs, stack files.
* :mod:`~spica_core.daemon.runner` — one stack's command lines, one ``/bin/sh -c`` each.
* :mod:`~spica_core.daemon.journal` — the append-only fsynced journal of dbspica writes.
* :mod:`~spica_core.daemon.events` — what the daemon tells dbspica: claimed, line started,
  line ended, completed, failed, rejected, released, recovered, check failed, node problem.
* :mod:`~spica_core.daemon.replay` — journal first, then an exactly-once replay in order, so
  an outage of dbspica needs no special path.
* :mod:`~spica_core.daemon.mirror` — what each event does to dbspica (states through
  :mod:`spica_core.db.stack_state`).
* :mod:`~spica_core.daemon.mail` — the Teraop failure mail.
* :mod:`~spica_core.daemon.watch` — inotify on ``queue/`` (a short poll where unavailable).
* :mod:`~spica_core.daemon.service` — the main loop: watch, slots, heartbeat, signals.

Importing this package imports none of them.
"""

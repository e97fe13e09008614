"""What happens on a node, under its spica root (DESIGN §3, §5): shared by the agent, the
daemon and ``stack add``.

* :mod:`~spica_core.node.layout` — where things are under the root, and the confinement to it.
* :mod:`~spica_core.node.host` — host name, boot id, whether a recorded pid runs; wire time.
* :mod:`~spica_core.node.files` — the one atomic write, bounded reads, a stat-keyed cache.
* :mod:`~spica_core.node.records` — the typed JSON records and integer files a node keeps.
* :mod:`~spica_core.node.queue` — the scan of ``queue/`` and the moves shown whole.
* :mod:`~spica_core.node.locks` — QFin locks and the node lock.
* :mod:`~spica_core.node.heartbeat` — the daemon's heartbeat.
* :mod:`~spica_core.node.disk` — disk usage of the data partitions.
* :mod:`~spica_core.node.actions` — operator actions as they happen on the node.
* :mod:`~spica_core.node.agent` — ``spica node serve``, the agent the console talks to.

Nothing is imported here: the agent starts at every connection and loads only what it uses.
"""

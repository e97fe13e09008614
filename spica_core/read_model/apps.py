"""Which nodes' binaries differ from the application table (the console's nodes panel).

From ``node_application`` (what ``spica apps``, ``apps register`` and the monitor last found
on each node) against the latest registered row of each application name, compared by
:func:`spica_core.apps.table.checksum_differs` like every other check.
"""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.apps.table import checksum_differs, newest, row_of
from spica_core.db.models import Application, Node, NodeApplication
from spica_core.read_model.scope import EVERYTHING, Scope


def binary_drift(engine: Engine, scope: Scope = EVERYTHING) -> dict[str, tuple[str, ...]]:
    """Node name -> the applications whose binary there differs from the registered one
    (another checksum, or missing), as last checked; nodes without drift are left out, and
    everything in a runid scope (no node internals)."""
    if scope.hides_node_internals:
        return {}
    with Session(engine) as session:
        apps = session.scalars(select(Application)).all()
        found = session.execute(
            select(Node.name, NodeApplication.application_id, NodeApplication.checksum).join(
                Node, Node.id == NodeApplication.node_id
            )
        ).all()
        rows = [row_of(a) for a in apps]
    name_of = {r.id: r.name for r in rows}
    latest = {name: newest(rows, name) for name in set(name_of.values())}
    drift: dict[str, set[str]] = {}
    for node, app_id, checksum in found:
        name = name_of.get(app_id)
        if name is not None and checksum_differs(checksum, latest[name]):
            drift.setdefault(node, set()).add(name)
    return {node: tuple(sorted(names)) for node, names in sorted(drift.items())}

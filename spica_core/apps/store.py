"""What dbspica keeps of applications beyond their registration: the versions each unit ran
with (``stack_app``, the seed's Auto_job) and what each node really has
(``node_application``).

Rows that two writers may create at once (two QFin units recording the same new version,
two ``spica apps`` storing one node) are inserted with the backend's insert-or-ignore and
read back, so neither writer fails on the other's row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from spica_core.db.models import Application, Node, NodeApplication, Stack, StackApp
from spica_core.db.types import utcnow
from spica_core.errors import NotFound, UsageError
from spica_core.names import validate_name
from spica_core.text import printable

#: ``registered_by`` of an application row created because a unit ran with a version nobody
#: registered.
AUTO = "auto"
#: What a version may be (what :func:`spica_core.apps.versions.parse_version` finds).
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+~-]{0,63}")


def record_unit_versions(session: Session, stack: str, versions: Mapping[str, str]) -> None:
    """The applications and versions unit ``stack`` ran with, as its ``stack_app`` rows.

    Each (name, version) is found in the application table, or created there with
    ``registered_by = "auto"`` (no checksum: nobody registered it). A unit run again with
    another version of an application keeps only the latest. Raises NotFound when dbspica
    holds no such stack, UsageError for a bad name or version; writes in the caller's
    transaction.
    """
    validate_name(stack)
    checked = {validate_name(n, "application"): checked_version(n, v) for n, v in versions.items()}
    unit = session.scalars(select(Stack).where(Stack.name == stack)).one_or_none()
    if unit is None:
        raise NotFound("stack", stack)
    for name, version in sorted(checked.items()):
        app_id = _application_id(session, name, version, unit.release)
        session.execute(
            delete(StackApp).where(
                StackApp.stack_id == unit.id,
                StackApp.application_id != app_id,
                StackApp.application_id.in_(select(Application.id).where(Application.name == name)),
            )
        )
        _insert_ignore(
            session,
            StackApp,
            {"stack_id": unit.id, "application_id": app_id, "version": version},
        )


def checked_version(name: str, version: str) -> str:
    """A version as dbspica keeps it: 1 to 64 letters, digits and ``_ . + ~ -``."""
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        shown = printable(str(version)[:60])
        raise UsageError(
            f"application {name}: version {shown!r} is not 1 to 64 letters, digits and "
            "_ . + ~ - (starting with a letter or a digit)"
        )
    return version


def _application_id(session: Session, name: str, version: str, release: str | None) -> int:
    found = _find(session, name, version)
    if found is not None:
        return found
    previous = session.scalars(
        select(Application.binary)
        .where(Application.name == name)
        .order_by(Application.installed_at.desc(), Application.id.desc())
        .limit(1)
    ).first()
    _insert_ignore(
        session,
        Application,
        {
            "name": name,
            "version": version,
            "binary": previous or name,
            "checksum": None,
            "config_files": [],
            "installed_at": utcnow(),
            "release": release,
            "registered_by": AUTO,
        },
    )
    made = _find(session, name, version, latest=True)
    assert made is not None  # inserted, or inserted by another writer
    return made


def _find(session: Session, name: str, version: str, *, latest: bool = False) -> int | None:
    """The row's id; ``latest``: a locking read, which sees a row another writer committed
    after this transaction's snapshot (what an ignored insert met, on MariaDB)."""
    stmt = select(Application.id).where(Application.name == name, Application.version == version)
    if latest:
        stmt = stmt.with_for_update(read=True)
    return session.scalars(stmt).one_or_none()


def _insert_ignore(session: Session, model: type[Any], values: dict[str, Any]) -> None:
    """INSERT that leaves an existing row (same unique key) as it is."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(model).values(**values).on_conflict_do_nothing())
    elif dialect in ("mysql", "mariadb"):
        session.execute(insert(model).values(**values).prefix_with("IGNORE"))
    else:
        if session.scalars(select(model).filter_by(**_unique_key(model, values))).first() is None:
            session.execute(insert(model).values(**values))


def _unique_key(model: type[Any], values: dict[str, Any]) -> dict[str, Any]:
    keys = {Application: ("name", "version"), StackApp: ("stack_id", "application_id")}
    keys[NodeApplication] = ("node_id", "application_id")
    return {k: values[k] for k in keys[model]}


# ------------------------------------------------------------------- node_application


@dataclass(frozen=True)
class NodeBinaryRecord:
    """One application binary as a node answered it (what ``node_application`` keeps)."""

    node: str
    application_id: int
    path: str | None
    sha256: str | None


def record_node_binaries(
    session: Session, records: Sequence[NodeBinaryRecord], *, at: datetime | None = None
) -> int:
    """Store what each node has for each registered application, checked at ``at``; a
    node's rows of older registrations of the same application are dropped. Nodes dbspica
    does not know are skipped. Returns the rows written."""
    at = at or utcnow()
    nodes = {name: id_ for name, id_ in session.execute(select(Node.name, Node.id))}
    names = {id_: name for id_, name in session.execute(select(Application.id, Application.name))}
    written = 0
    for rec in records:
        node_id = nodes.get(rec.node)
        name = names.get(rec.application_id)
        if node_id is None or name is None:
            continue
        session.execute(
            delete(NodeApplication).where(
                NodeApplication.node_id == node_id,
                NodeApplication.application_id != rec.application_id,
                NodeApplication.application_id.in_(
                    select(Application.id).where(Application.name == name)
                ),
            )
        )
        values = {"path": rec.path or "", "checksum": rec.sha256, "checked_at": at}
        _insert_ignore(
            session,
            NodeApplication,
            {"node_id": node_id, "application_id": rec.application_id, **values},
        )
        row = session.scalars(
            select(NodeApplication)
            .where(
                NodeApplication.node_id == node_id,
                NodeApplication.application_id == rec.application_id,
            )
            .with_for_update()
        ).one()
        for key, value in values.items():
            setattr(row, key, value)
        written += 1
    session.flush()
    return written

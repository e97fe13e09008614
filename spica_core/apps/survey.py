"""``spica apps``: each configured application's binary on every node, against the table.

Every node is asked at once through the executor (one ``versions`` request per node for all
the applications); the answers are compared with the latest registered row of each name
(:func:`spica_core.apps.table.newest`) and among the nodes themselves, and what each node has
is stored in ``node_application`` (what the console's nodes panel marks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from spica_core.apps.table import (
    ApplicationRow,
    checksum_differs,
    newest,
    read_applications,
    short_checksum,
)
from spica_core.apps.versions import binary_problem
from spica_core.config import ApplicationConfig, SpicaConfig
from spica_core.db.types import utcnow
from spica_core.errors import ConfigError, UsageError
from spica_core.names import is_valid_name
from spica_core.reports import iso

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from spica_core.executor import Executor
    from spica_core.node.protocol import BinaryVersion


class BinaryState(StrEnum):
    #: Same checksum as the registered row.
    OK = "ok"
    #: Another checksum than the registered row's.
    DIFFERS = "differs"
    #: No such binary on the node.
    MISSING = "missing"
    #: The node did not answer (``error`` says why).
    UNREACHABLE = "unreachable"
    #: Nothing registered (with a checksum) to compare with.
    UNREGISTERED = "unregistered"


@dataclass(frozen=True)
class NodeBinary:
    """One application's binary on one node, as the node answered (or why it did not)."""

    node: str
    path: str | None = None
    exists: bool = False
    sha256: str | None = None
    version: str | None = None
    error: str | None = None

    def state(self, registered: ApplicationRow | None) -> BinaryState:
        if self.error is not None:
            return BinaryState.UNREACHABLE
        if not self.exists:
            return BinaryState.MISSING
        if registered is None or not registered.checksum:
            return BinaryState.UNREGISTERED
        if checksum_differs(self.sha256, registered):
            return BinaryState.DIFFERS
        return BinaryState.OK


@dataclass(frozen=True)
class AppSurvey:
    """One configured application across the nodes."""

    name: str
    binary: str
    configured_version: str | None
    registered: ApplicationRow | None
    nodes: tuple[NodeBinary, ...]

    def answered(self) -> list[NodeBinary]:
        """The nodes that answered and have the binary."""
        return [n for n in self.nodes if n.error is None and n.exists]

    def checksums(self) -> dict[str | None, list[str]]:
        """Checksum -> the nodes that have it (among those that answered and have it)."""
        groups: dict[str | None, list[str]] = {}
        for n in self.answered():
            groups.setdefault(n.sha256, []).append(n.node)
        return groups

    def versions(self) -> dict[str | None, list[str]]:
        groups: dict[str | None, list[str]] = {}
        for n in self.answered():
            groups.setdefault(n.version, []).append(n.node)
        return groups

    @property
    def nodes_disagree(self) -> bool:
        return len(self.checksums()) > 1

    def drift(self) -> list[str]:
        """Why this application is not the same everywhere, one reason each (empty: none)."""
        reasons: list[str] = []
        if self.nodes_disagree:
            shown = "; ".join(
                f"{short_checksum(sha)} on {', '.join(nodes)}"
                for sha, nodes in self.checksums().items()
            )
            reasons.append(f"{self.name}: nodes differ ({shown})")
        states = {n.node: n.state(self.registered) for n in self.nodes}
        differs = [node for node, s in states.items() if s is BinaryState.DIFFERS]
        if differs and self.registered is not None:
            reasons.append(
                f"{self.name}: {', '.join(differs)} differ"
                f"{'s' if len(differs) == 1 else ''} from the registered "
                f"{self.registered.version} ({short_checksum(self.registered.checksum)})"
            )
        missing = [node for node, s in states.items() if s is BinaryState.MISSING]
        if missing:
            reasons.append(f"{self.name}: binary {self.binary} missing on {', '.join(missing)}")
        return reasons

    def to_json(self) -> dict[str, Any]:
        reg = self.registered
        return {
            "name": self.name,
            "binary": self.binary,
            "configured_version": self.configured_version,
            "registered": None
            if reg is None
            else {
                "version": reg.version,
                "checksum": reg.checksum,
                "installed_at": iso(reg.installed_at),
                "release": reg.release,
                "registered_by": reg.registered_by,
            },
            "drift": self.drift(),
            "nodes": [
                {
                    "node": n.node,
                    "state": n.state(reg).value,
                    "path": n.path,
                    "version": n.version,
                    "checksum": n.sha256,
                    "error": n.error,
                }
                for n in self.nodes
            ],
        }


@dataclass(frozen=True)
class Survey:
    """Every configured application on every node, checked at ``at``."""

    at: datetime
    apps: tuple[AppSurvey, ...]
    #: Nodes that did not answer, and why.
    unreachable: dict[str, str]

    @property
    def drift(self) -> list[str]:
        return [reason for app in self.apps for reason in app.drift()]

    def app(self, name: str) -> AppSurvey:
        for a in self.apps:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked_at": iso(self.at),
            "drift": self.drift,
            "unreachable": dict(sorted(self.unreachable.items())),
            "applications": [a.to_json() for a in self.apps],
        }


def configured_application(config: SpicaConfig, name: str) -> ApplicationConfig:
    """The application ``name`` of ``[[release.applications]]``; UsageError naming the
    configured ones when it is not there."""
    for app in config.release.applications:
        if app.name == name:
            return app
    known = ", ".join(a.name for a in config.release.applications) or "none"
    raise UsageError(
        f"application {name!r} is not in [[release.applications]] of release "
        f"{config.release.name} (configured: {known})"
    )


async def ask_nodes(
    executor: Executor,
    apps: Sequence[ApplicationConfig],
    nodes: Sequence[str],
) -> tuple[dict[str, dict[str, BinaryVersion]], dict[str, str]]:
    """Each node's answer for ``apps`` (node -> name -> binary), all nodes at once, and the
    nodes that did not answer with why."""
    from spica_core.node.protocol import Application, ProtocolError

    asked = [Application(name=a.name, binary=a.binary) for a in apps]

    async def one(node: str) -> dict[str, BinaryVersion] | str:
        try:
            found = await executor.versions(node, asked)
        except ProtocolError as exc:
            return f"refused: {exc.message}"
        except Exception as exc:  # unreachable, agent missing, timed out: named, not raised
            return str(exc) or exc.__class__.__name__
        return {b.name: b for b in found}

    answers = await asyncio.gather(*(one(n) for n in nodes))
    found: dict[str, dict[str, BinaryVersion]] = {}
    unreachable: dict[str, str] = {}
    for node, answer in zip(nodes, answers, strict=True):
        if isinstance(answer, str):
            unreachable[node] = answer
        else:
            found[node] = answer
    return found, unreachable


async def survey(
    executor: Executor,
    config: SpicaConfig,
    rows: Sequence[ApplicationRow],
    *,
    names: Sequence[str] | None = None,
    nodes: Sequence[str] | None = None,
) -> Survey:
    """The configured applications (or ``names`` of them) on every node of ``executor`` (or
    on ``nodes``)."""
    apps = [configured_application(config, n) for n in names] if names else []
    apps = apps or list(config.release.applications)
    for app in apps:
        if not is_valid_name(app.name):
            raise ConfigError(f"[[release.applications]] name {app.name!r}: not a valid name")
        why = binary_problem(app.binary)
        if why is not None:
            raise ConfigError(f"[[release.applications]] {app.name}: binary {app.binary!r} {why}")
    nodes = list(executor.hosts if nodes is None else nodes)
    found, unreachable = await ask_nodes(executor, apps, nodes) if apps else ({}, {})
    at = utcnow()
    surveyed = []
    for app in apps:
        per_node = []
        for node in nodes:
            if node in unreachable:
                per_node.append(NodeBinary(node, error=unreachable[node]))
                continue
            b = found[node].get(app.name)
            if b is None:
                per_node.append(NodeBinary(node, error="no answer for this application"))
                continue
            per_node.append(NodeBinary(node, b.path, b.exists, b.sha256, b.version))
        surveyed.append(
            AppSurvey(
                app.name, app.binary, app.version, newest(list(rows), app.name), tuple(per_node)
            )
        )
    return Survey(at, tuple(surveyed), unreachable)


def store_survey(engine: Engine, result: Survey) -> int:
    """``node_application``: what each answering node has of each registered application."""
    from sqlalchemy.orm import Session

    from spica_core.apps.store import NodeBinaryRecord, record_node_binaries

    records = [
        NodeBinaryRecord(n.node, app.registered.id, n.path, n.sha256 if n.exists else None)
        for app in result.apps
        if app.registered is not None
        for n in app.nodes
        if n.error is None
    ]
    with Session(engine) as session, session.begin():
        return record_node_binaries(session, records, at=result.at)


async def check_applications(
    executor: Executor,
    config: SpicaConfig,
    engine: Engine,
    nodes: Sequence[str] | None = None,
) -> Survey:
    """``spica apps`` (and the monitor, on the nodes that answer): survey the nodes and
    store what each has."""
    from spica_core.db.registry import register_nodes

    await asyncio.to_thread(register_nodes, engine, config)  # node_application needs the rows
    rows = await asyncio.to_thread(read_applications, engine)
    result = await survey(executor, config, rows, nodes=nodes)
    await asyncio.to_thread(store_survey, engine, result)
    return result

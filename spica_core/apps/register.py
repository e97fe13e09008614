"""``spica apps register NAME``: record the version and checksum found after an install.

The seed's "Spica updating": check the permission to update (major/minor version number),
install on all nodes, update the application table. So registration

* asks every node (through the executor) and refuses, naming the nodes, when one does not
  answer, lacks the binary, or when the nodes' checksums disagree;
* refuses a major version change (X of X.Y.Z) while units of the configured release are
  pending or running, unless forced (they would finish with another major version than they
  started with);
* writes the ``application`` row (a rebuilt binary of the same version updates that row's
  checksum), each node's ``node_application`` row and the ``operator_action`` audit row in one
  transaction, re-checking the major-version guard there.

Every outcome but a cancelled confirmation is audited: applied, unchanged, dry-run, refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spica_core.apps.table import ApplicationRow, newest, read_applications, short_checksum
from spica_core.apps.versions import major
from spica_core.config import SpicaConfig
from spica_core.errors import SpicaError
from spica_core.names import validate_name
from spica_core.states import StackState

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from spica_core.executor import Executor

#: The audit row's ``action``.
ACTION = "apps-register"
#: Units of the release in these states block a major version change.
BUSY = (StackState.PENDING, StackState.RUNNING)


class RegisterRefused(SpicaError):
    """The registration was refused (audited); the message says why and names the nodes."""

    exit_code = 1


@dataclass(frozen=True)
class RegisterPlan:
    """What ``apps register`` found and would record."""

    name: str
    binary: str
    release: str
    version: str | None
    checksum: str | None
    #: Node -> its path of the binary (nodes that answered with it).
    paths: dict[str, str]
    previous: ApplicationRow | None
    #: Units of the release pending or running, per state.
    busy: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    config_files: tuple[str, ...] = ()
    #: Why it cannot be recorded (nodes unreachable, missing, disagreeing; no version).
    problem: str | None = None

    @property
    def unchanged(self) -> bool:
        prev = self.previous
        return prev is not None and (prev.version, prev.checksum) == (self.version, self.checksum)

    @property
    def major_change(self) -> bool:
        """The major version differs from the registered one (or cannot be compared)."""
        if self.previous is None or self.version is None or self.previous.version == self.version:
            return False
        old, new = major(self.previous.version), major(self.version)
        return old is None or new is None or old != new

    def guard(self, *, force: bool) -> str | None:
        """Why the major-version guard refuses, None when it lets the change through."""
        if not self.major_change or not self.busy or force:
            return None
        assert self.previous is not None and self.version is not None
        count = sum(self.busy.values())
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.busy.items()))
        return (
            f"{self.name} {self.previous.version} -> {self.version} is a major version change "
            f"while {count} unit{'s' if count != 1 else ''} of release {self.release} "
            f"{'are' if count != 1 else 'is'} pending or running ({states}): let them finish, "
            "or pass --force"
        )

    def render(self) -> str:
        prev = self.previous
        was = "nothing registered" if prev is None else f"registered {prev.version}"
        if prev is not None:
            was += f" ({short_checksum(prev.checksum)})"
        lines = [
            f"record {self.name} {self.version} sha256 {self.checksum} for release "
            f"{self.release} ({was})",
            f"  found on {len(self.paths)} node(s): "
            + ", ".join(f"{n} {p}" for n, p in sorted(self.paths.items())),
        ]
        if self.major_change:
            lines.append("  major version change")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        prev = self.previous
        return {
            "name": self.name,
            "binary": self.binary,
            "release": self.release,
            "version": self.version,
            "checksum": self.checksum,
            "nodes": dict(sorted(self.paths.items())),
            "previous": None
            if prev is None
            else {"version": prev.version, "checksum": prev.checksum},
            "major_change": self.major_change,
            "busy": self.busy,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class RegisterOutcome:
    plan: RegisterPlan
    #: applied, unchanged or dry-run.
    result: str
    #: --force let a major version change through while units of the release run.
    forced: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "result": self.result, "forced": self.forced}


async def plan_registration(
    executor: Executor, config: SpicaConfig, engine: Engine, name: str
) -> RegisterPlan:
    """Ask every node for ``name``'s binary and compare with the table; changes nothing."""
    import asyncio

    from spica_core.apps.survey import configured_application, survey

    validate_name(name, "application")
    app = configured_application(config, name)
    rows = await asyncio.to_thread(read_applications, engine)
    found = (await survey(executor, config, rows, names=[name])).app(name)
    release = config.release.name
    previous = newest(rows, name)
    paths = {n.node: n.path or "" for n in found.answered()}
    base = RegisterPlan(
        name, app.binary, release, None, None, paths, previous, config_files=tuple(app.config_files)
    )

    unreachable = [f"{n.node} ({n.error})" for n in found.nodes if n.error is not None]
    missing = [n.node for n in found.nodes if n.error is None and not n.exists]
    problems = []
    if not found.nodes:
        problems.append("no node is configured")
    if unreachable:
        problems.append(f"node(s) not answering: {', '.join(unreachable)}")
    if missing:
        problems.append(f"binary {app.binary} missing on {', '.join(missing)}")
    checksums = found.checksums()
    if len(checksums) > 1:
        shown = "; ".join(f"{short_checksum(s)} on {', '.join(ns)}" for s, ns in checksums.items())
        problems.append(f"nodes have different binaries: {shown}")
    if None in checksums:
        problems.append(f"binary unreadable on {', '.join(checksums[None])}")
    if problems:
        return _replace(base, problem=f"cannot register {name}: " + "; ".join(problems))

    checksum = next(iter(checksums))
    versions = found.versions()
    notes: list[str] = []
    if len(versions) > 1:
        shown = "; ".join(f"{v or 'none'} on {', '.join(ns)}" for v, ns in versions.items())
        return _replace(
            base, problem=f"cannot register {name}: same checksum, versions differ ({shown})"
        )
    version = next(iter(versions))
    if version is None:
        if app.version is None:
            return _replace(
                base,
                problem=f"cannot register {name}: {app.binary} -v reports no version and "
                f"[[release.applications]] gives none (set version = ...)",
            )
        version = app.version
        notes.append(f"{app.binary} -v reports no version: the configured {version} is used")
    elif app.version is not None and app.version != version:
        notes.append(
            f"the nodes have {version}, [[release.applications]] says {app.version}: "
            "update the configuration"
        )
    if previous is not None and previous.version == version and previous.checksum != checksum:
        notes.append(f"same version {version}, another checksum (a rebuilt binary)")
    busy = await asyncio.to_thread(busy_units, engine, release)
    return _replace(base, version=version, checksum=checksum, busy=busy, notes=tuple(notes))


def busy_units(engine: Engine | Session, release: str) -> dict[str, int]:
    """Units of ``release`` pending or running, per state (what blocks a major change)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from spica_core.db.models import Stack

    stmt = (
        select(Stack.state, func.count())
        .where(Stack.release == release, Stack.state.in_([s.value for s in BUSY]))
        .group_by(Stack.state)
    )
    if isinstance(engine, Session):
        return {s: int(n) for s, n in engine.execute(stmt)}
    with Session(engine) as session:
        return {s: int(n) for s, n in session.execute(stmt)}


def audit(engine: Engine, plan: RegisterPlan, user: str, result: str, message: str = "") -> None:
    """The ``operator_action`` row of an outcome written outside :func:`apply_registration`."""
    from sqlalchemy.orm import Session

    with Session(engine) as session, session.begin():
        session.add(_audit_row(plan, user, result, message, dry_run=result == "dry-run"))


def apply_registration(engine: Engine, plan: RegisterPlan, user: str, *, force: bool) -> str:
    """Write the application row, the nodes' rows and the audit row in one transaction;
    ``applied`` or ``unchanged``. RegisterRefused (audited) when the major-version guard
    refuses now (a unit was launched since the plan)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from spica_core.apps.store import NodeBinaryRecord, record_node_binaries
    from spica_core.db.models import Application
    from spica_core.db.types import utcnow

    assert plan.problem is None and plan.version is not None
    refused: str | None = None
    with Session(engine) as session, session.begin():
        current = _replace(plan, busy=busy_units(session, plan.release))
        refused = current.guard(force=force)
        if refused is None:
            result = "unchanged" if plan.unchanged else "applied"
            row = session.scalars(
                select(Application).where(
                    Application.name == plan.name, Application.version == plan.version
                )
            ).one_or_none()
            if row is None:
                row = Application(name=plan.name, version=plan.version)
                session.add(row)
            if result == "applied":
                row.binary = plan.binary
                row.checksum = plan.checksum
                row.config_files = list(plan.config_files)
                row.installed_at = utcnow()
                row.release = plan.release
                row.registered_by = user
            session.flush()
            records = [NodeBinaryRecord(n, row.id, p, plan.checksum) for n, p in plan.paths.items()]
            record_node_binaries(session, records)
            forced = force and current.guard(force=False) is not None
            session.add(_audit_row(current, user, result, "", dry_run=False, forced=forced))
            return result
    audit(engine, current, user, "refused", refused)
    raise RegisterRefused(refused)


def settle(
    engine: Engine,
    plan: RegisterPlan,
    user: str,
    *,
    force: bool = False,
    dry_run: bool = False,
    confirm: Callable[[RegisterPlan], bool] | None = None,
) -> RegisterOutcome | None:
    """After :func:`plan_registration`: refuse, or show and ask (``confirm``), then record.
    None when the confirmation was declined (nothing changed, nothing audited)."""
    refused = plan.problem or plan.guard(force=force)
    if refused is not None:
        audit(engine, plan, user, "refused", refused)
        raise RegisterRefused(refused)
    forced = force and plan.guard(force=False) is not None
    if dry_run:
        audit(engine, plan, user, "dry-run")
        return RegisterOutcome(plan, "dry-run", forced)
    if not plan.unchanged and confirm is not None and not confirm(plan):
        return None
    return RegisterOutcome(plan, apply_registration(engine, plan, user, force=force), forced)


def _audit_row(
    plan: RegisterPlan,
    user: str,
    result: str,
    message: str,
    *,
    dry_run: bool,
    forced: bool = False,
) -> Any:
    from spica_core.db.models import OperatorAction

    return OperatorAction(
        user=user,
        action=ACTION,
        targets=[plan.name],
        dry_run=dry_run,
        plan=plan.render() if plan.problem is None else plan.problem,
        result=result,
        detail={"message": message, "forced": forced, **plan.to_json()},
    )


def _replace(plan: RegisterPlan, **changes: Any) -> RegisterPlan:
    import dataclasses

    return dataclasses.replace(plan, **changes)

"""QFin planning (``spica qfin``): one QFin unit per image placed on a node that has none
for the current release yet.

A unit is an ordinary unit of the executor (step ``qfin``): named after its image and
release (``811001p_qfin_T0003``), on the node that holds the image, its ``commands.sh`` the
lines of :func:`spica_core.qfin.commands.qfin_commands` (the real tools, then
``spica qfin record``), each argv joined with :func:`shlex.join`. It is staged with a unit
record naming its partition, whose QFin lock its daemon holds while it runs
(:mod:`spica_core.daemon.qfin_lock`). Its dbspica rows — the stack (runid, filter,
release), the ``stack_file`` linking the image (role ``qfin``) and the image's
``qf_status = planned`` — are written in one transaction through
:func:`spica_core.stack_add.add_stacks`, like every ad-hoc unit; ``spica remove`` of the
unit puts a still planned image back to ``new``.

Outputs go to ``<root>/<partition>/qfin/<release>/<image>/`` on the node: on the image's own
partition (QFin reads and writes one disk, the one its lock guards), per release so that two
releases' results never mix, inside the node's spica root by construction (every part is a
validated name).

Planning is idempotent: an image whose unit exists (any state), or that is not on a node,
is skipped with the reason; running again plans only what is new.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig
from spica_core.db.models import Image, Node, Runid, Stack, StackFile
from spica_core.errors import InvalidName, SpicaError
from spica_core.names import is_valid_name, validate_name
from spica_core.node.layout import QFIN_STEP
from spica_core.qfin.commands import QfinUnitPaths, qfin_commands
from spica_core.read_model.images import located
from spica_core.resources import astromatic_dir

if TYPE_CHECKING:
    from spica_core.stack_add import RowsHook

#: The step of QFin units, and the role of their image in ``stack_file``.
#: The directory of a partition that holds QFin outputs, by release then image.
QFIN_DIR = "qfin"


class UnknownImages(SpicaError):
    """Images named on the command line that dbspica does not hold."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        shown = ", ".join(self.names[:10]) + (" …" if len(self.names) > 10 else "")
        noun = "image" if len(self.names) == 1 else "images"
        super().__init__(f"no {noun} named {shown} in dbspica (ingest them first)")


def unit_name(image: str, release: str) -> str:
    """``811001p_qfin_T0003``: the QFin unit of ``image`` for ``release``."""
    return validate_name(f"{image}_{QFIN_STEP}_{release}")


def workdir(root: str, partition: str, release: str, image: str) -> str:
    """Where the unit of ``image`` writes on its node: inside ``root`` (names validated)."""
    parts = (
        validate_name(partition, "partition"),
        QFIN_DIR,
        validate_name(release, "release"),
        validate_name(image, "image"),
    )
    return posixpath.join(root.rstrip("/") or "/", *parts)


@dataclass(frozen=True)
class QfinQuery:
    """Which images to plan: all, or those of a runid, of a node, or named."""

    runid: str | None = None
    node: str | None = None
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedUnit:
    unit: str
    image: str
    image_id: int
    node: str
    partition: str
    image_path: str
    workdir: str
    runid: str | None
    filter: str | None
    #: The lines of ``commands.sh``.
    commands: list[str]
    #: ``new`` in a plan; ``planned`` or ``pending`` once written, ``failed`` when not added.
    state: str = "new"
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "image": self.image,
            "node": self.node,
            "partition": self.partition,
            "image_path": self.image_path,
            "workdir": self.workdir,
            "runid": self.runid,
            "filter": self.filter,
            "commands": self.commands,
            "state": self.state,
            "error": self.error,
        }


@dataclass(frozen=True)
class SkippedImage:
    image: str
    reason: str
    #: Its existing QFin unit, when that is the reason.
    unit: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "reason": self.reason, "unit": self.unit}


@dataclass(frozen=True)
class QfinPlan:
    release: str
    units: list[PlannedUnit]
    skipped: list[SkippedImage]
    dry_run: bool = True
    launch: bool = False
    #: Units written but whose launch did not apply: ``(unit, why)``.
    not_launched: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_launched and all(u.error is None for u in self.units)

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "dry_run": self.dry_run,
            "launch": self.launch,
            "units": [u.to_json() for u in self.units],
            "skipped": [s.to_json() for s in self.skipped],
            "not_launched": [{"unit": u, "message": m} for u, m in self.not_launched],
        }


def plan_qfin(engine: Engine, config: SpicaConfig, query: QfinQuery) -> QfinPlan:
    """The units ``spica qfin`` would add; nothing is written. Raises UnknownImages (exit 1)
    when a named image is not in dbspica, UsageError for a bad name or unknown node."""
    release = validate_name(config.release.name, "release")
    if query.runid is not None:
        validate_name(query.runid, "runid")
    if query.node is not None:
        config.node(validate_name(query.node, "node"))
    for name in query.images:
        validate_name(name, "image")
    with Session(engine) as session:
        rows = _images(session, query)
        if query.images:
            missing = sorted(set(query.images) - {row.filename for row in rows})
            if missing:
                raise UnknownImages(missing)
        existing = _existing_units(session, rows, release)
    units: list[PlannedUnit] = []
    skipped: list[SkippedImage] = []
    config_dir = str(astromatic_dir())
    for row in rows:
        planned = _plan_one(config, row, release, existing.get(row.id), config_dir)
        if isinstance(planned, PlannedUnit):
            units.append(planned)
        else:
            skipped.append(planned)
    return QfinPlan(release, units, skipped)


def apply_qfin(
    engine: Engine,
    config: SpicaConfig,
    plan: QfinPlan,
    *,
    launch: bool = False,
    by: str | None = None,
    over_ssh: bool | None = None,
) -> QfinPlan:
    """Write ``plan``'s units (node, then dbspica rows), launching them with ``launch``;
    the plan with each unit's state (or why it was not added)."""
    from spica_core.stack_add import StackSpec, add_stacks  # the executor, on first use

    specs = [
        StackSpec(
            unit.unit,
            unit.node,
            "".join(f"{line}\n" for line in unit.commands).encode("utf-8"),
            step=QFIN_STEP,
            partition=unit.partition,
            columns={"runid": unit.runid, "filter": unit.filter, "release": plan.release},
            rows=_rows_of(unit.image_id),
        )
        for unit in plan.units
    ]
    result = add_stacks(engine, config, specs, launch=launch, by=by, over_ssh=over_ssh)
    states = {added.stack: added.state for added in result.added}
    errors = dict(result.failed)
    units = [
        _with_state(unit, states.get(unit.unit, "failed"), errors.get(unit.unit))
        for unit in plan.units
    ]
    return QfinPlan(plan.release, units, plan.skipped, False, launch, list(result.not_launched))


def _with_state(unit: PlannedUnit, state: str, error: str | None) -> PlannedUnit:
    return replace(unit, state=state, error=error)


def _rows_of(image_id: int) -> RowsHook:
    """The unit's own rows, in the transaction of its stack row: the image linked (role
    ``qfin``) and marked planned."""

    def rows(session: Session, stack: Stack) -> None:
        session.add(StackFile(stack_id=stack.id, image_id=image_id, role=QFIN_STEP))
        session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(qf_status="planned")
            .execution_options(synchronize_session=False)
        )

    return rows


@dataclass(frozen=True)
class _ImageRow:
    id: int
    filename: str
    node: str | None
    partition: str | None
    path: str | None
    runid: str | None
    filter: str | None
    repository: str | None


def _images(session: Session, query: QfinQuery) -> list[_ImageRow]:
    stmt = located(
        Image.id,
        Image.filename,
        Node.name,
        Image.partition,
        Image.path,
        Runid.name,
        Image.filter,
        Image.repository,
    ).order_by(Image.filename)
    if query.runid is not None:
        stmt = stmt.where(Runid.name == query.runid)
    if query.node is not None:
        stmt = stmt.where(Node.name == query.node)
    if query.images:
        stmt = stmt.where(Image.filename.in_(query.images))
    return [_ImageRow(*row) for row in session.execute(stmt).all()]


def _existing_units(
    session: Session, rows: list[_ImageRow], release: str
) -> dict[int, tuple[str, str]]:
    """Image id -> (unit, state) of its QFin unit of ``release``, by link or by name (a row
    of that name that links nothing still takes the name)."""
    found: dict[int, tuple[str, str]] = {}
    image_ids = [row.id for row in rows]
    if not image_ids:
        return found
    linked = session.execute(
        select(StackFile.image_id, Stack.name, Stack.state)
        .join(Stack, Stack.id == StackFile.stack_id)
        .where(
            StackFile.image_id.in_(image_ids),
            StackFile.role == QFIN_STEP,
            Stack.step == QFIN_STEP,
            Stack.release == release,
        )
    ).all()
    for image_id, name, state in linked:
        found[image_id] = (name, state)
    by_name = {
        f"{row.filename}_{QFIN_STEP}_{release}": row.id
        for row in rows
        if is_valid_name(f"{row.filename}_{QFIN_STEP}_{release}")
    }
    for name, state in session.execute(
        select(Stack.name, Stack.state).where(Stack.name.in_(list(by_name)))
    ).all():
        found.setdefault(by_name[name], (name, state))
    return found


def _plan_one(
    config: SpicaConfig,
    row: _ImageRow,
    release: str,
    existing: tuple[str, str] | None,
    config_dir: str,
) -> PlannedUnit | SkippedImage:
    image = row.filename
    if existing is not None:
        unit, state = existing
        return SkippedImage(image, f"has its QFin unit {unit} ({state})", unit)
    if row.node is None or row.partition is None or row.path is None:
        where = f"still in repository {row.repository}" if row.repository else "no node holds it"
        return SkippedImage(image, f"not on a node ({where}): transfer it first")
    try:
        node = config.node(row.node)
    except SpicaError:
        return SkippedImage(image, f"its node {row.node} is not in the configuration")
    root = node.root.rstrip("/")
    path = posixpath.normpath(row.path)
    if not path.startswith(f"{root}/{row.partition}/"):
        return SkippedImage(
            image, f"its path {row.path} is not under {root}/{row.partition} on {row.node}"
        )
    try:
        unit = unit_name(image, release)
        out = workdir(root, row.partition, release, image)
    except InvalidName as exc:
        return SkippedImage(image, f"no QFin unit can be named after it: {exc}")
    paths = QfinUnitPaths(image=image, image_path=path, workdir=out)
    argvs = qfin_commands(paths, release=release, config_dir=config_dir)
    return PlannedUnit(
        unit=unit,
        image=image,
        image_id=row.id,
        node=row.node,
        partition=row.partition,
        image_path=path,
        workdir=out,
        runid=row.runid,
        filter=row.filter,
        commands=[shlex.join(argv) for argv in argvs],
    )

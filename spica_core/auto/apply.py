"""``spica auto`` writing a plan: inputs copied, the release frozen, units added.

First every file a unit needs on its node and does not find there is copied through the
executor's :class:`~spica_core.executor.base.FileCopier`, as DataTransfer copies: the
release's reference catalogue (converted to FITS_LDAC here once, cached) and the inputs held
by other nodes (read over their node's connection). The source is hashed where it lies and
checked against ingestion's checksum, the bytes hashed on the way, the destination hashed by
its node and renamed into place only when all agree; a file already there with those bytes
is kept (units of a node share their copies). A unit any of whose copies failed is not
added, and says why; the others go on.

Then the release is frozen (:mod:`.freeze`) and the units are added as QFin's are
(:func:`spica_core.stack_add.add_stacks`): ``commands.sh`` staged on the node, the stack row
(survey, filter, release, tile, inputs digest, priority) and its ``stack_file`` rows (roles
scamp and swarp) in one transaction, then one audited launch with ``launch``.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from spica_core.auto.freeze import freeze
from spica_core.auto.plan import AutoPlan, PlannedStack, with_state
from spica_core.checksum import Hasher, file_checksum, is_checksum
from spica_core.config import SpicaConfig
from spica_core.db.models import Stack, StackFile
from spica_core.errors import NodeUnreachable, SpicaError
from spica_core.executor.base import FileCopier
from spica_core.executor.file_copy import NodeFile
from spica_core.node.protocol import ProtocolError
from spica_core.operations.session import operator_name
from spica_core.stack_add import RowsHook, StackSpec, add_stacks


class CopyFailed(SpicaError):
    """A file a unit needs could not be put on its node."""


@dataclass(frozen=True)
class _Copy:
    """One file to put at ``path`` (relative to the node's root) on ``node``."""

    node: str
    path: str
    source: Path | NodeFile
    #: What the source must hash to (ingestion's checksum), when known.
    checksum: str | None
    what: str


def apply_auto(
    engine: Engine,
    config: SpicaConfig,
    plan: AutoPlan,
    *,
    launch: bool = False,
    by: str | None = None,
    over_ssh: bool | None = None,
) -> AutoPlan:
    """Write ``plan``'s units (copies, release frozen, stacks added, launched with
    ``launch``); the plan with each unit's state, or why it was not added."""
    user = operator_name(by)
    done = replace(plan, dry_run=False, launch=launch)
    if not plan.units:
        return done
    from spica_core.stacking.refcat import reference_ldac

    assert plan.reference is not None
    ldac, _ = reference_ldac(plan.reference)
    errors, unreachable = _copy_all(config, _copies(config, plan.units, ldac), over_ssh)
    done = replace(done, unreachable=unreachable)
    units = [_failed_copy(unit, errors) for unit in plan.units]
    ready = [unit for unit in units if unit.error is None]
    if ready:
        with Session(engine) as session, session.begin():
            freeze(session, plan.settings, user)
        release = config.stack_release(plan.release)
        specs = [_spec(config, unit, plan.release, release.priority) for unit in ready]
        result = add_stacks(engine, config, specs, launch=launch, by=user, over_ssh=over_ssh)
        states = {added.stack: added.state for added in result.added}
        failed = dict(result.failed)
        units = [unit if unit.error else _added(unit, states, failed) for unit in units]
        done = replace(done, not_launched=list(result.not_launched))
    return replace(done, units=units)


def _added(unit: PlannedStack, states: dict[str, str], failed: dict[str, str]) -> PlannedStack:
    return with_state(unit, states.get(unit.name, "failed"), failed.get(unit.name))


def _failed_copy(unit: PlannedStack, errors: dict[tuple[str, str], str]) -> PlannedStack:
    if unit.error is not None:
        return unit
    for key in _unit_keys(unit):
        if key in errors:
            return with_state(unit, "failed", errors[key])
    return unit


def _unit_keys(unit: PlannedStack) -> list[tuple[str, str]]:
    keys = [(unit.node, unit.unit.reference_catalogue)]
    keys += [(copy.node, copy.path) for copy in unit.copies]
    return keys


def _relative(config: SpicaConfig, node: str, path: str) -> str:
    root = config.node(node).root.rstrip("/")
    if not path.startswith(root + "/"):
        raise CopyFailed(f"{path} is not under node {node}'s root {root}")
    return path[len(root) + 1 :]


def _copies(
    config: SpicaConfig, units: Sequence[PlannedStack], ldac: Path
) -> dict[tuple[str, str], _Copy]:
    """Every file the units need copied, once per (node, absolute path)."""
    copies: dict[tuple[str, str], _Copy] = {}
    for unit in units:
        ref = unit.unit.reference_catalogue
        copies.setdefault(
            (unit.node, ref),
            _Copy(unit.node, _relative(config, unit.node, ref), ldac, None,
                  "the reference catalogue"),
        )  # fmt: skip
        for copy in unit.copies:
            source = NodeFile(copy.source_node, _relative(config, copy.source_node,
                                                          copy.source_path))  # fmt: skip
            copies.setdefault(
                (copy.node, copy.path),
                _Copy(copy.node, _relative(config, copy.node, copy.path), source,
                      copy.checksum, f"input {copy.image}"),
            )  # fmt: skip
    return copies


def _copy_all(
    config: SpicaConfig, copies: dict[tuple[str, str], _Copy], over_ssh: bool | None
) -> tuple[dict[tuple[str, str], str], list[str]]:
    """Copy every file; the error of each that failed, by (node, path), and the nodes that
    did not answer."""
    from spica_core.executor.agents import AgentExecutor

    nodes = sorted({c.node for c in copies.values()} | {
        c.source.node for c in copies.values() if isinstance(c.source, NodeFile)
    })  # fmt: skip
    here = all(Path(os.path.expanduser(config.node(n).root)).is_dir() for n in nodes)
    if over_ssh or (over_ssh is None and not here):
        executor = AgentExecutor.over_ssh(config, nodes)
    else:
        executor = AgentExecutor.here(config)

    async def run() -> tuple[dict[tuple[str, str], str], list[str]]:
        errors: dict[tuple[str, str], str] = {}
        unreachable: set[str] = set()
        async with executor:
            keys = list(copies)
            results = await asyncio.gather(
                *(copy_file(executor, copies[key]) for key in keys), return_exceptions=True
            )
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, SpicaError | ProtocolError | OSError):
                    raise result
                if isinstance(result, NodeUnreachable):
                    unreachable.add(result.node)
                errors[key] = f"copy of {copies[key].what} to {key[0]}:{key[1]}: {_why(result)}"
        return errors, sorted(unreachable)

    return asyncio.run(run())


def _why(exc: BaseException) -> str:
    if isinstance(exc, ProtocolError):
        return exc.message
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


async def copy_file(copier: FileCopier, copy: _Copy) -> None:
    """Put ``copy.source`` at ``copy.path`` on ``copy.node``, checksums verified on both
    sides; a destination already holding those bytes is kept."""
    source = copy.source
    if isinstance(source, NodeFile):
        [found] = await copier.file_sums(source.node, [source.path])
        if not found.exists or found.size is None or found.checksum is None:
            raise CopyFailed(
                f"{source.path} on node {source.node}: {found.error or 'no such file'}"
            )
        size, checksum = found.size, found.checksum
    else:
        checksum, size = await asyncio.to_thread(file_checksum, source)
    if copy.checksum and is_checksum(copy.checksum) and copy.checksum != checksum:
        raise CopyFailed(
            f"the source changed since it was ingested: checksum {copy.checksum}, now {checksum}"
        )
    prep = await copier.prepare_file(copy.node, copy.path, size=size, resume=False)
    if prep.destination.exists:
        placed = await copier.place_file(copy.node, copy.path, size, checksum)
        if placed.placed:
            return
    hasher = Hasher()
    written = await copier.copy_file(copy.node, source, prep, hasher)
    if written != size or hasher.value() != checksum:
        raise CopyFailed(
            f"the source changed while copied ({size} bytes {checksum}, read {written} bytes "
            f"{hasher.value()})"
        )
    placed = await copier.place_file(copy.node, copy.path, written, checksum)
    if not placed.placed:
        raise CopyFailed(
            f"checksum mismatch on {copy.node}: source {checksum}, node {placed.checksum}; "
            "the partial file was deleted"
        )


def _spec(config: SpicaConfig, unit: PlannedStack, release: str, priority: int) -> StackSpec:
    stack = unit.unit
    # The co-add's work directory, as the node knows it (under its root): removed with it.
    root = config.node(unit.node).root.rstrip("/")
    workdir = posixpath.relpath(stack.workdir, root or "/")
    columns: dict[str, object] = {
        "survey": stack.survey,
        "filter": stack.filter,
        "release": release,
        "tile": stack.tile.key,
        "inputs_digest": unit.digest,
    }
    if unit.runid is not None:
        columns["runid"] = unit.runid
    return StackSpec(
        unit.name,
        unit.node,
        "".join(f"{line}\n" for line in unit.commands).encode("utf-8"),
        step=stack.mode,  # the steps are named as the modes
        priority=priority,
        workdir=workdir,
        columns=columns,
        rows=_rows_of(unit.files),
    )


def _rows_of(files: tuple[tuple[int, str], ...]) -> RowsHook:
    """The unit's ``stack_file`` rows, in the transaction of its stack row."""

    def rows(session: Session, stack: Stack) -> None:
        session.add_all(
            StackFile(stack_id=stack.id, image_id=image_id, role=role) for image_id, role in files
        )

    return rows

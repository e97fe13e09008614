"""Ad-hoc stacks, ``spica stack add``: a planned stack made from a command file.

For one-off work (and for tests and benchmarks): the dbspica row (planned, on its node) and
``stacks/<name>/commands.sh`` on the node; ``launch`` also queues it (``<name>.spica``,
pending), so the node's daemon runs it.

Everything on the node goes through the executor (:mod:`spica_core.executor`): its node
agent over SSH, or, when the node's spica root is on this machine (on the node itself, or
mounted), the agent's own code answering in-process — the same checks either way.

Order of the writes, so that no failure leaves a half-made stack that could run: the name is
checked free in dbspica; the commands are staged (refused when the node has a queue file of
that name); the row is inserted (planned) — if that fails the stack is removed from the node
again; then ``launch`` is an operator launch of that one stack through the operations (plan,
then apply: audited intent, the exclusive create of the ``.spica``, the row moved to
pending), like ``spica launch --yes``. A ``.spica`` that appeared meanwhile is never
overwritten: the launch is refused, audited, and the stack stays planned. An add with
``launch`` refused because the name is taken is audited as a refused launch too.

Generated units (QFin) come many at a time through :func:`add_stacks`: one executor for all
their nodes, each unit added on its own (one that fails never stops the others), with its
extra dbspica rows written in the transaction of its stack row, then one audited launch of
all that were added.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig
from spica_core.db import stack_state
from spica_core.db.models import Node, Stack
from spica_core.db.registry import register_nodes
from spica_core.errors import SpicaError, UsageError
from spica_core.executor import ErrorCode, Executor, ProtocolError, Remove
from spica_core.executor.agents import AgentExecutor
from spica_core.names import validate_name
from spica_core.node.files import file_kind
from spica_core.node.layout import MAX_COMMANDS_BYTES, unit_workdir_problem
from spica_core.node.protocol import UnitRecord
from spica_core.node.stack_files import is_noop, parse_commands
from spica_core.operations import (
    ItemResult,
    OpAction,
    OperationRequest,
    Operations,
    Outcome,
    Selection,
    operator_name,
)
from spica_core.operations.audit import record_refused
from spica_core.states import StackState

#: ``stack.step`` is a short word (qfin, image, stack, or any ad-hoc one).
MAX_STEP = 32


class StackExists(SpicaError):
    """The name is taken, in dbspica or on the node."""

    def __init__(self, stack: str, where: str) -> None:
        self.stack = stack
        super().__init__(f"stack {stack} already exists {where}")


class NodeRootNotHere(SpicaError):
    """The node's spica root is not reachable from this machine."""


class LaunchNotApplied(SpicaError):
    """The stack was added but its launch did not apply (refused: another ``.spica`` was
    there first; or failed); the audit row says so too."""

    def __init__(self, stack: str, result: ItemResult) -> None:
        self.stack = stack
        self.result = result
        self.exit_code = 3 if result.unreachable else 1
        super().__init__(
            f"stack {stack} added on {result.node}, its launch {result.outcome.value}: "
            f"{result.message}"
        )


@dataclass(frozen=True)
class StackAdded:
    stack: str
    node: str
    step: str
    priority: int
    lines: int
    commands: int
    state: str
    commands_path: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def add_stack(
    engine: Engine,
    config: SpicaConfig,
    name: str,
    node: str,
    commands: bytes,
    *,
    step: str = "stack",
    priority: int = 0,
    partition: str | None = None,
    launch: bool = False,
    by: str | None = None,
    over_ssh: bool | None = None,
    source: str = "the command file",
) -> StackAdded:
    """Create stack ``name`` on ``node`` from ``commands`` (one shell command per line).

    ``over_ssh`` None writes locally when the node's root is here, through its agent else.
    ``partition``: staged in the unit record, the QFin lock a ``qfin`` unit holds.
    ``source`` names the commands in messages (``--commands FILE``). ``by`` is the operator
    (default: :func:`~spica_core.operations.operator_name`). Raises StackExists when the name
    is taken (audited when ``launch``), LaunchNotApplied when the stack was added but not
    launched.
    """
    spec = StackSpec(name, node, commands, step=step, priority=priority, partition=partition)
    new = _checked(config, spec, launch, by if by is not None else operator_name(), source)
    try:
        executor, roots = _executor(config, [node], over_ssh)
        return asyncio.run(_add_with(executor, engine, config, new, roots.get(node)))
    except StackExists as exc:
        if launch:
            record_refused(engine, _launch_request(name, new.by), name, node, str(exc))
        raise


#: More dbspica rows of a new unit, written in the transaction that inserts its stack row.
RowsHook = Callable[[Session, Stack], None]


@dataclass(frozen=True)
class StackSpec:
    """One unit :func:`add_stacks` is asked to add (``add_stack`` makes one of its
    arguments)."""

    name: str
    node: str
    commands: bytes
    step: str = "stack"
    priority: int = 0
    #: The raid partition a ``qfin`` unit works on: its daemon holds that QFin lock.
    partition: str | None = None
    #: A co-add's work directory outside ``stacks/<stack>/``, relative to the node root: a
    #: remove of the stack deletes it (:func:`~spica_core.node.layout.unit_workdir_problem`).
    workdir: str | None = None
    #: Stack row columns besides the planned state's own (runid, filter, release…).
    columns: Mapping[str, Any] = field(default_factory=dict)
    rows: RowsHook | None = None


@dataclass(frozen=True)
class _NewStack:
    """What ``add_stack`` or ``add_stacks`` was asked for, checked."""

    name: str
    node: str
    commands: bytes
    lines: list[bytes]
    step: str
    priority: int
    launch: bool
    by: str
    partition: str | None = None
    #: The unit's work directory outside ``stacks/<stack>/``, relative to the node root.
    workdir: str | None = None
    columns: Mapping[str, Any] = field(default_factory=dict)
    rows: RowsHook | None = None

    @property
    def unit(self) -> UnitRecord | None:
        """What the node must know of the unit beyond its commands: a QFin unit's partition
        (its lock), a co-add's work directory (removed with it); others stage none."""
        if self.partition is None and self.workdir is None:
            return None
        return UnitRecord(step=self.step, partition=self.partition, workdir=self.workdir)

    def added(self, state: StackState, commands_path: str) -> StackAdded:
        return StackAdded(
            stack=self.name,
            node=self.node,
            step=self.step,
            priority=self.priority,
            lines=len(self.lines),
            commands=sum(1 for line in self.lines if not is_noop(line)),
            state=state.value,
            commands_path=commands_path,
        )


def _checked(config: SpicaConfig, spec: StackSpec, launch: bool, by: str, source: str) -> _NewStack:
    """``spec`` validated (names, step, commands); UsageError/InvalidName naming what is bad."""
    validate_name(spec.name)
    config.node(validate_name(spec.node, "node"))
    if len(spec.step) > MAX_STEP:
        raise UsageError(f"--step {spec.step[:40]!r}: at most {MAX_STEP} characters")
    validate_name(spec.step, "step")
    if spec.partition is not None:
        validate_name(spec.partition, "partition")
    if spec.workdir is not None and (why := unit_workdir_problem(spec.workdir, spec.name)):
        raise UsageError(why)
    commands, lines = check_commands(spec.commands, source)
    return _NewStack(
        spec.name, spec.node, commands, lines, spec.step, spec.priority, launch, by,
        spec.partition, spec.workdir, spec.columns, spec.rows,
    )  # fmt: skip


def _executor(
    config: SpicaConfig, nodes: Sequence[str], over_ssh: bool | None
) -> tuple[AgentExecutor, dict[str, Path]]:
    """The executor for ``nodes`` and the roots it reaches on this machine: the agent's code
    in-process when every node's root is here (unless ``over_ssh``), their agents else."""
    roots = {node: Path(os.path.expanduser(config.node(node).root)) for node in nodes}
    if over_ssh or (over_ssh is None and not all(root.is_dir() for root in roots.values())):
        return AgentExecutor.over_ssh(config, list(dict.fromkeys(nodes))), {}
    return AgentExecutor.here(config), roots


def _name_free_in_db(engine: Engine, name: str) -> None:
    with Session(engine) as session:
        if session.scalar(select(Stack.id).where(Stack.name == name)) is not None:
            raise StackExists(name, "in dbspica")


async def _add(
    engine: Engine, config: SpicaConfig, new: _NewStack, executor: Executor, root: Path | None
) -> StackAdded:
    """Stage the commands through the executor, insert the row, then launch (and its row).

    ``root``: the node's root on this machine (the commands path is reported under it)."""
    name, node = new.name, new.node
    _name_free_in_db(engine, name)
    try:
        staged = await executor.stage(node, name, new.commands, unit=new.unit)
    except ProtocolError as exc:
        if exc.code == ErrorCode.WRONG_STATE:
            raise StackExists(name, f"on node {node} ({exc.message})") from None
        raise NodeRootNotHere(f"node {node}: {exc.message}") from None
    try:
        node_id = _node_id(engine, config, node)
        _insert_planned(engine, config, new, node_id)
    except BaseException:
        # No row, no staged stack: take the commands off the node again (best effort;
        # the row's error is the one to report).
        with contextlib.suppress(Exception):
            await executor.apply(Remove(node, name, new.by))
        raise
    state = StackState.PLANNED
    if new.launch:
        await _launch(Operations(config, engine, executor), name, new.by)
        state = StackState.PENDING
    commands_path = str(root / staged.commands) if root is not None else staged.commands
    return new.added(state, commands_path)


def read_commands_file(path: str, stdin: BinaryIO | None = None) -> bytes:
    """The bytes of ``--commands FILE`` (``-``: ``stdin``), read no further than one byte past
    :data:`MAX_COMMANDS_BYTES` (``/dev/zero`` is refused at once, not read to exhaustion).

    A file must be a regular file: a FIFO would block, a device never end. UsageError
    (exit 2) naming the file for each refusal.
    """
    if path == "-":
        assert stdin is not None
        data = stdin.read(MAX_COMMANDS_BYTES + 1)
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"--commands {path}: {exc.strerror or exc}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise UsageError(f"--commands {path}: {file_kind(mode)}, not a regular file")
            data = _read_upto(fd, MAX_COMMANDS_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"--commands {path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
    if len(data) > MAX_COMMANDS_BYTES:
        raise UsageError(f"--commands {path}: {_too_large()}")
    return data


def _read_upto(fd: int, size: int) -> bytes:
    """At most ``size`` bytes of ``fd``, fewer only at its end."""
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.read(fd, min(size, 1 << 20))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def check_commands(commands: bytes, source: str) -> tuple[bytes, list[bytes]]:
    """The commands as written on the node (CRLF made LF) and their lines, or UsageError
    naming ``source``: over the size limit, empty, binary, not UTF-8, a stray CR."""
    from spica_core.node.stack_files import StackFileError, normalize_newlines

    if len(commands) > MAX_COMMANDS_BYTES:
        raise UsageError(f"{source}: {_too_large()}")
    try:
        commands = normalize_newlines(commands)
        return commands, parse_commands(commands)
    except StackFileError as exc:
        raise UsageError(f"{source} {exc.reason.removeprefix('commands.sh ')}") from None


def _too_large() -> str:
    return (
        f"larger than {MAX_COMMANDS_BYTES} bytes ({MAX_COMMANDS_BYTES // 1024} KiB), "
        "the limit of a stack's commands"
    )


async def _add_with(
    executor: AgentExecutor,
    engine: Engine,
    config: SpicaConfig,
    new: _NewStack,
    root: Path | None = None,
) -> StackAdded:
    async with executor:
        return await _add(engine, config, new, executor, root)


@dataclass(frozen=True)
class StacksAdded:
    """What :func:`add_stacks` did: the units added (planned, or pending once launched), and
    ``(stack, why)`` of those not added at all and of those added whose launch did not apply."""

    added: list[StackAdded]
    failed: list[tuple[str, str]]
    not_launched: list[tuple[str, str]]


def add_stacks(
    engine: Engine,
    config: SpicaConfig,
    specs: Sequence[StackSpec],
    *,
    launch: bool = False,
    by: str | None = None,
    over_ssh: bool | None = None,
) -> StacksAdded:
    """Add every unit of ``specs`` as :func:`add_stack` does, through one executor for all
    their nodes. Every spec is checked before anything is written (UsageError naming the
    unit); then each unit is added on its own: one refused (its name taken, its node down)
    is reported and the others go on. With ``launch``, the units added are launched in one
    operator launch (audited, as ``spica launch NAME… --yes``)."""
    user = by if by is not None else operator_name()
    news = [_checked(config, spec, False, user, f"the commands of {spec.name}") for spec in specs]
    if not news:
        return StacksAdded([], [], [])
    executor, roots = _executor(config, [new.node for new in news], over_ssh)
    return asyncio.run(_add_many(executor, engine, config, news, roots, launch, user))


async def _add_many(
    executor: AgentExecutor,
    engine: Engine,
    config: SpicaConfig,
    news: list[_NewStack],
    roots: dict[str, Path],
    launch: bool,
    by: str,
) -> StacksAdded:
    added: list[StackAdded] = []
    failed: list[tuple[str, str]] = []
    not_launched: list[tuple[str, str]] = []
    async with executor:
        for new in news:
            try:
                added.append(await _add(engine, config, new, executor, roots.get(new.node)))
            except (SpicaError, ProtocolError, OSError) as exc:
                failed.append((new.name, str(exc)))
        if launch and added:
            ops = Operations(config, engine, executor)
            names = tuple(one.stack for one in added)
            plan = await ops.plan(
                OperationRequest(OpAction.LAUNCH, Selection(names=names), user=by)
            )
            results = {result.stack: result for result in await ops.apply(plan)}
            for i, one in enumerate(added):
                result = results.get(one.stack)
                if result is not None and result.outcome is Outcome.APPLIED:
                    added[i] = replace(one, state=StackState.PENDING.value)
                else:
                    why = f"{result.outcome.value}: {result.message}" if result else "not launched"
                    not_launched.append((one.stack, why))
    return StacksAdded(added, failed, not_launched)


def launch_stack(engine: Engine, config: SpicaConfig, name: str, by: str | None = None) -> None:
    """planned → pending for a stack just added whose node's root is on this machine: an
    operator launch through the operations, answered by the agent's code in-process.

    Raises LaunchNotApplied (audited) when the launch is refused or fails.
    """
    ops = Operations(config, engine, AgentExecutor.here(config))
    asyncio.run(_launch(ops, name, by if by is not None else operator_name()))


def _launch_request(name: str, by: str) -> OperationRequest:
    return OperationRequest(OpAction.LAUNCH, Selection(names=(name,)), user=by)


async def _launch(ops: Operations, name: str, by: str) -> None:
    """``spica launch NAME --yes``: the plan (the agent's dry run), then its apply, which
    writes the audit rows; the ``.spica`` is created exclusively, never replaced."""
    plan = await ops.plan(_launch_request(name, by))
    (result,) = await ops.apply(plan)
    if result.outcome is not Outcome.APPLIED:
        raise LaunchNotApplied(name, result)


def _insert_planned(
    engine: Engine, config: SpicaConfig, new: _NewStack, node_id: int | None
) -> None:
    """The planned row, and the unit's own rows (``new.rows``), in one transaction."""
    with Session(engine) as session, session.begin():
        columns: dict[str, Any] = {"release": config.release.name, **new.columns}
        row = stack_state.create_planned(
            session,
            name=new.name,
            step=new.step,
            node_id=node_id,
            priority=new.priority,
            lines=len(new.lines),
            progress=0,
            **columns,
        )
        if new.rows is not None:
            session.flush()
            new.rows(session, row)


def _node_id(engine: Engine, config: SpicaConfig, node: str) -> int | None:
    """The node's row id; the configured nodes are registered first if it has none."""
    with Session(engine) as session:
        found = session.scalar(select(Node.id).where(Node.name == node))
    if found is None:
        register_nodes(engine, config)
        with Session(engine) as session:
            found = session.scalar(select(Node.id).where(Node.name == node))
    return found

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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from dataclasses import dataclass
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
from spica_core.node.layout import MAX_COMMANDS_BYTES
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
    launch: bool = False,
    by: str | None = None,
    over_ssh: bool | None = None,
    source: str = "the command file",
) -> StackAdded:
    """Create stack ``name`` on ``node`` from ``commands`` (one shell command per line).

    ``over_ssh`` None writes locally when the node's root is here, through its agent else.
    ``source`` names the commands in messages (``--commands FILE``). ``by`` is the operator
    (default: :func:`~spica_core.operations.operator_name`). Raises StackExists when the name
    is taken (audited when ``launch``), LaunchNotApplied when the stack was added but not
    launched.
    """
    validate_name(name)
    node_config = config.node(validate_name(node, "node"))
    if len(step) > MAX_STEP:
        raise UsageError(f"--step {step[:40]!r}: at most {MAX_STEP} characters")
    validate_name(step, "step")
    commands, lines = check_commands(commands, source)
    new = _NewStack(
        name, node, commands, lines, step, priority, launch,
        by if by is not None else operator_name(),
    )  # fmt: skip
    try:
        root = Path(os.path.expanduser(node_config.root))
        if over_ssh or (over_ssh is None and not root.is_dir()):
            return asyncio.run(
                _add_with(AgentExecutor.over_ssh(config, [node]), engine, config, new)
            )
        return asyncio.run(_add_with(AgentExecutor.here(config), engine, config, new, root))
    except StackExists as exc:
        if launch:
            record_refused(engine, _launch_request(name, new.by), name, node, str(exc))
        raise


@dataclass(frozen=True)
class _NewStack:
    """What ``add_stack`` was asked for, checked."""

    name: str
    node: str
    commands: bytes
    lines: list[bytes]
    step: str
    priority: int
    launch: bool
    by: str

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
        staged = await executor.stage(node, name, new.commands)
    except ProtocolError as exc:
        if exc.code == ErrorCode.WRONG_STATE:
            raise StackExists(name, f"on node {node} ({exc.message})") from None
        raise NodeRootNotHere(f"node {node}: {exc.message}") from None
    try:
        node_id = _node_id(engine, config, node)
        _insert_planned(engine, config, name, node_id, new.step, new.priority, len(new.lines))
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
    engine: Engine,
    config: SpicaConfig,
    name: str,
    node_id: int | None,
    step: str,
    priority: int,
    lines: int,
) -> None:
    with Session(engine) as session, session.begin():
        stack_state.create_planned(
            session,
            name=name,
            step=step,
            node_id=node_id,
            priority=priority,
            lines=lines,
            progress=0,
            release=config.release.name,
        )


def _node_id(engine: Engine, config: SpicaConfig, node: str) -> int | None:
    """The node's row id; the configured nodes are registered first if it has none."""
    with Session(engine) as session:
        found = session.scalar(select(Node.id).where(Node.name == node))
    if found is None:
        register_nodes(engine, config)
        with Session(engine) as session:
            found = session.scalar(select(Node.id).where(Node.name == node))
    return found

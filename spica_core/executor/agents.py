"""The executor of today: a node agent per host, over SSH (NodePool) or in-process for a
root on this machine (LocalNodes).

The only module outside the node package and its transports that names agent verbs or
builds their arguments: operations ask for a :class:`~spica_core.executor.base.Change` and
get a typed answer back.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from spica_core.errors import NodeAnswerLost, NodeUnreachable
from spica_core.executor.base import (
    Answer,
    Capability,
    Change,
    Launch,
    NotSupported,
    Remove,
    Requeue,
    Unlock,
)
from spica_core.node.protocol import (
    MAX_CHECKSUM_PATHS,
    MAX_MOVE_BYTES,
    MAX_MOVES,
    MOVE_OF,
    Application,
    Args,
    BinaryVersion,
    ChecksumArgs,
    ErrorCode,
    FileSum,
    FitsHeadersArgs,
    FitsHeadersResult,
    LaunchArgs,
    Move,
    MovesArgs,
    PlaceArgs,
    PlaceResult,
    PrepareArgs,
    PrepareResult,
    ProtocolError,
    QueueEntry,
    RemoveArgs,
    RequeueArgs,
    StackChange,
    StageArgs,
    StageResult,
    StatusArgs,
    TailArgs,
    TailResult,
    UnitRecord,
    UnlockArgs,
    UnlockQfinArgs,
    UnlockQfinResult,
    VersionsArgs,
    move_answers,
    move_batches,
    move_size,
)
from spica_core.states import StackState

if TYPE_CHECKING:
    from spica_core.checksum import Hasher
    from spica_core.cluster_snapshot import ClusterSnapshot
    from spica_core.config import SpicaConfig
    from spica_core.executor.file_copy import BlockSource, NodeFile
    from spica_core.node_pool import AgentSession, NodeCaller, NodePool

R = TypeVar("R")

#: Agent sessions per node for DataTransfer's file verbs (``[transfer].in_flight`` sets it
#: for a run): each file in flight has its own.
DEFAULT_FILE_SESSIONS = 4

#: Moves sent to one node in one ``moves`` request: a batch is one round trip and must be
#: carried out within one call timeout (a move is a rename or two; a remove walks a tree).
DEFAULT_BATCH = 200


class AgentExecutor:
    """Units run by each node's daemon, moved by its agent (``spica node serve``).

    ``nodes`` is the caller's: the console shares its polling pool, the CLI opens one,
    ``stack add`` for a root here passes a LocalNodes. :meth:`close` closes it.

    Many changes (:meth:`plan_many`, :meth:`apply_many`) go to every node at once (at most
    ``concurrency`` nodes, None: no bound), each node's in ``moves`` requests of up to
    ``batch`` items; ``batch=1`` sends each change as its own verb (what an agent without
    ``moves`` is sent too), and ``batch=1, concurrency=1`` is the one-at-a-time path.
    """

    capabilities = frozenset(
        {
            Capability.SNAPSHOT,
            Capability.STAGE,
            Capability.TAIL,
            Capability.QFIN_LOCKS,
            Capability.COPY,
            Capability.VERSIONS,
        }
    )

    def __init__(
        self,
        nodes: NodeCaller,
        hosts: Sequence[str] | None = None,
        *,
        batch: int = DEFAULT_BATCH,
        concurrency: int | None = None,
    ) -> None:
        if not 1 <= batch <= MAX_MOVES:
            raise ValueError(f"batch must be 1 to {MAX_MOVES}, not {batch}")
        self._nodes = nodes
        self._hosts = tuple(hosts) if hosts is not None else tuple(getattr(nodes, "links", ()))
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency) if concurrency else None
        #: Nodes whose agent answered ``moves`` with unknown_verb (an older agent).
        self._no_moves: set[str] = set()
        #: DataTransfer's agent sessions per node, idle ones, and the bound on them.
        self._file_limits: dict[str, asyncio.Semaphore] = {}
        self._file_agents: dict[str, list[AgentSession]] = {}
        self.file_sessions = DEFAULT_FILE_SESSIONS

    @classmethod
    def over_ssh(cls, config: SpicaConfig, nodes: Sequence[str] | None = None) -> AgentExecutor:
        """An executor over a new NodePool of ``nodes`` (default: every configured node)."""
        from spica_core.node_pool import NodePool

        executor = cls(NodePool(config, nodes=nodes))
        executor.file_sessions = config.transfer.in_flight
        return executor

    @classmethod
    def here(cls, config: SpicaConfig) -> AgentExecutor:
        """An executor for roots on this machine, answered by the agent's code in-process."""
        from spica_core.local_node import LocalNodes

        return cls(LocalNodes(config), [n.name for n in config.nodes])

    async def __aenter__(self) -> AgentExecutor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def hosts(self) -> Sequence[str]:
        return self._hosts

    @property
    def pool(self) -> NodePool:
        """The SSH pool behind this executor (the console's poller reads its snapshot)."""
        from spica_core.node_pool import NodePool

        if not isinstance(self._nodes, NodePool):
            raise NotSupported("this executor has no SSH pool")
        return self._nodes

    async def _request(self, node: str, args: Args[R]) -> R:
        """One verb on ``node``, its answer decoded (and checked) as the verb's result."""
        try:
            return await self._nodes.request(node, args)
        except ProtocolError as exc:
            if exc.code != ErrorCode.BAD_ANSWER:
                raise
            raise ProtocolError(exc.code, f"node {node}: {exc.message}") from None

    async def snapshot(self) -> ClusterSnapshot:
        return await self.pool.refresh()

    def _args(self, change: Change, dry_run: bool, *, move: bool = False) -> Args[StackChange]:
        """The verb's arguments of ``change``; with ``move``, as a ``moves`` item."""
        stack, by = change.stack, change.by
        kind: type[Args[StackChange]]
        fields: dict[str, object]
        match change:
            case Launch():
                kind, fields = LaunchArgs, {"priority": change.priority}
            case Requeue():
                kind = RequeueArgs
                fields = {"priority": change.priority, "from_start": change.from_start}
            case Unlock():
                kind, fields = UnlockArgs, {"to": change.to, "priority": change.priority}
            case Remove():
                kind = RemoveArgs
                fields = {"purge": list(change.purge), "stack_id": change.stack_id}
            case _:
                raise NotSupported(f"no such change: {type(change).__name__}")
        cls = MOVE_OF[kind] if move else kind
        return cls(stack=stack, by=by, dry_run=dry_run, **fields)  # type: ignore[arg-type]

    async def plan(self, change: Change) -> StackChange:
        return await self._request(change.node, self._args(change, True))

    async def apply(self, change: Change) -> StackChange:
        return await self._request(change.node, self._args(change, False))

    async def plan_many(self, changes: Sequence[Change]) -> list[Answer]:
        return await self._many(changes, dry_run=True)

    async def apply_many(self, changes: Sequence[Change]) -> list[Answer]:
        return await self._many(changes, dry_run=False)

    async def _many(self, changes: Sequence[Change], *, dry_run: bool) -> list[Answer]:
        """Every node at once, each node's changes in order; answers in ``changes``' order."""
        by_node: dict[str, list[int]] = {}
        for i, change in enumerate(changes):
            by_node.setdefault(change.node, []).append(i)

        async def one_node(node: str, indexes: list[int]) -> list[Answer]:
            mine = [changes[i] for i in indexes]
            if self._limit is None:
                return await self._node_many(node, mine, dry_run)
            async with self._limit:
                return await self._node_many(node, mine, dry_run)

        per_node = await asyncio.gather(*(one_node(n, ix) for n, ix in by_node.items()))
        answers: list[Answer | None] = [None] * len(changes)
        for indexes, node_answers in zip(by_node.values(), per_node, strict=True):
            for i, answer in zip(indexes, node_answers, strict=True):
                answers[i] = answer
        return [a for a in answers if a is not None]

    async def _node_many(self, node: str, changes: list[Change], dry_run: bool) -> list[Answer]:
        """One node's changes, batch after batch. A batch refused as a whole (or whose answer
        was lost) answers that for each of its items; once the node is unreachable, the rest
        is not sent and says so."""
        answers: list[Answer | None] = [None] * len(changes)
        fitting: list[int] = []
        moves: list[Move] = []
        for i, change in enumerate(changes):
            try:
                move: Move = self._args(change, dry_run, move=True)  # type: ignore[assignment]
            except NotSupported as exc:
                answers[i] = exc
                continue
            if move_size(move) > MAX_MOVE_BYTES:
                answers[i] = ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"the {change.stack} move is over {MAX_MOVE_BYTES} bytes: not sent",
                )
                continue
            fitting.append(i)
            moves.append(move)
        down: NodeUnreachable | None = None
        for batch in move_batches(moves, self._batch):
            indexes = [fitting[k] for k in batch]
            if down is not None:
                batch_answers: list[Answer] = [down] * len(batch)
            else:
                batch_answers = await self._send_batch(
                    node, [changes[i] for i in indexes], [moves[k] for k in batch], dry_run
                )
            for i, answer in zip(indexes, batch_answers, strict=True):
                answers[i] = answer
                if isinstance(answer, NodeUnreachable) and down is None:
                    down = _not_sent(node, answer)
        return [a for a in answers if a is not None]

    async def _send_batch(
        self, node: str, changes: list[Change], moves: list[Move], dry_run: bool
    ) -> list[Answer]:
        """One ``moves`` request (or each change as its own verb when ``batch`` is 1 or the
        node's agent has no ``moves``)."""
        if self._batch == 1 or node in self._no_moves:
            single: list[Answer] = []
            for change in changes:
                try:
                    answer: StackChange = await self._request(node, self._args(change, dry_run))
                    single.append(answer)
                except NodeUnreachable as exc:
                    single.append(exc)
                    single += [_not_sent(node, exc)] * (len(changes) - len(single))
                    break
                except Exception as exc:
                    single.append(exc)
            return single
        try:
            result = await self._request(node, MovesArgs(items=moves))
            return list(move_answers(result, len(moves)))
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNKNOWN_VERB:  # an older agent: it changed nothing
                self._no_moves.add(node)
                return await self._send_batch(node, changes, moves, dry_run)
            return [exc] * len(changes)
        except Exception as exc:
            return [exc] * len(changes)

    async def stage(
        self,
        node: str,
        stack: str,
        commands: bytes,
        inputs: Sequence[str] | None = None,
        unit: UnitRecord | None = None,
    ) -> StageResult:
        encoded = base64.b64encode(commands).decode("ascii")
        args = StageArgs(
            stack=stack, commands_b64=encoded, inputs=list(inputs) if inputs else None, unit=unit
        )
        return await self._request(node, args)

    async def tail(
        self, node: str, stack: str, line: int | None = None, lines: int | None = None
    ) -> TailResult:
        return await self._request(node, TailArgs(stack=stack, line=line, lines=lines))

    async def units(self, node: str, states: Sequence[StackState]) -> list[QueueEntry]:
        status = await self._request(node, StatusArgs(partitions=[], states=list(states)))
        return list(status.queue or ())

    async def release_qfin_lock(
        self, node: str, partition: str, by: str, *, dry_run: bool
    ) -> UnlockQfinResult:
        args = UnlockQfinArgs(partition=partition, by=by, dry_run=dry_run)
        return await self._request(node, args)

    async def hold(self, node: str, stack: str, by: str) -> StackChange:
        raise NotSupported(f"node agents cannot hold stack {stack}: launch it when it may run")

    async def release(self, node: str, stack: str, by: str) -> StackChange:
        raise NotSupported(f"node agents cannot hold or release stack {stack}")

    async def fits_headers(
        self, node: str, paths: Sequence[str], offset: int = 0
    ) -> FitsHeadersResult:
        return await self._request(node, FitsHeadersArgs(paths=list(paths), offset=offset))

    async def versions(self, node: str, applications: Sequence[Application]) -> list[BinaryVersion]:
        apps = list(applications)
        try:
            found = await self._request(node, VersionsArgs(applications=apps, version=True))
        except ProtocolError as exc:
            if exc.code != ErrorCode.BAD_ARGS or not apps:
                raise
            # An agent from before ``version``: checksums only, versions unknown.
            found = await self._request(node, VersionsArgs(applications=apps))
        return found.binaries

    # -- DataTransfer (FileCopier) -------------------------------------------------------

    async def file_sums(self, node: str, paths: Sequence[str]) -> list[FileSum]:
        sums: list[FileSum] = []
        for start in range(0, len(paths), MAX_CHECKSUM_PATHS):
            chunk = list(paths[start : start + MAX_CHECKSUM_PATHS])
            sums += (await self._request(node, ChecksumArgs(paths=chunk))).files
        return sums

    async def prepare_file(
        self, node: str, path: str, *, size: int | None = None, resume: bool = True
    ) -> PrepareResult:
        return await self._file_request(node, PrepareArgs(path=path, size=size, resume=resume))

    async def place_file(self, node: str, path: str, size: int, checksum: str) -> PlaceResult:
        return await self._file_request(node, PlaceArgs(path=path, size=size, checksum=checksum))

    async def _file_request(self, node: str, args: Args[R]) -> R:
        """A file verb on one of the node's transfer sessions (up to ``file_sessions``, opened
        on demand): a node hashing one arrived file does not hold up the next file's
        ``prepare``, nor the console's polls. Without SSH, or when no extra session starts,
        the main session answers."""
        from spica_core.node_pool import AgentMissing, NodePool

        if not isinstance(self._nodes, NodePool):
            return await self._request(node, args)
        limit = self._file_limits.setdefault(node, asyncio.Semaphore(self.file_sessions))
        idle = self._file_agents.setdefault(node, [])
        async with limit:
            session: AgentSession | None = idle.pop() if idle else None
            if session is None:
                try:
                    session = await self._nodes.link(node).extra_agent()
                except AgentMissing:
                    return await self._request(node, args)
            try:
                return await session.request(args)
            finally:
                if not session.closed:
                    idle.append(session)

    async def copy_file(
        self,
        node: str,
        source: Path | NodeFile,
        target: PrepareResult,
        hasher: Hasher,
        *,
        offset: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Over the node's SSH connection (SFTP) or, for a root here, by a local write; a
        source on another node is read over that node's connection (relayed here)."""
        from spica_core.executor import file_copy
        from spica_core.node_pool import NodePool

        src = await self._open_source(source, offset)
        if not isinstance(self._nodes, NodePool):
            return await file_copy.local_write(
                src, Path(target.real_partial), hasher, offset=offset, progress=progress
            )
        import asyncssh

        link = self._nodes.link(node)
        try:
            sftp = await link.sftp()
        except BaseException:
            await src.close()
            raise
        try:
            return await file_copy.sftp_write(
                sftp, src, target.real_partial, hasher, offset=offset, progress=progress
            )
        except asyncssh.SFTPError as exc:
            raise ProtocolError("sftp", f"node {node}: {target.partial}: {exc.reason}") from None
        except (asyncssh.Error, ConnectionError, TimeoutError) as exc:
            link.drop_sftp()
            raise NodeUnreachable(node, f"SFTP copy of {target.partial}: {exc}") from exc

    async def _open_source(self, source: Path | NodeFile, offset: int) -> BlockSource:
        """The block source of a copy: a file here, or a node's file (for a root on this
        machine, under that root; over SSH, through the node's SFTP session)."""
        from spica_core.executor import file_copy
        from spica_core.node.layout import resolve_inside
        from spica_core.node_pool import NodePool

        if isinstance(source, Path):
            return file_copy.LocalSource(source, offset)
        if not isinstance(self._nodes, NodePool):
            root = self._nodes.config.node(source.node).root
            return file_copy.LocalSource(resolve_inside(root, source.path), offset)
        import asyncssh

        link = self._nodes.link(source.node)
        remote = f"{link.node.root.rstrip('/')}/{source.path}"
        try:
            sftp = await link.sftp()
            handle = await sftp.open(remote, "rb", encoding=None)
            if offset:
                await handle.seek(offset)
        except asyncssh.SFTPError as exc:
            raise ProtocolError("sftp", f"node {source.node}: {remote}: {exc.reason}") from None
        except (asyncssh.Error, ConnectionError, TimeoutError) as exc:
            link.drop_sftp()
            raise NodeUnreachable(source.node, f"SFTP read of {remote}: {exc}") from exc
        return file_copy.SftpSource(handle)

    async def read_file(self, node: str, path: str, limit: int) -> bytes:
        """A small file of ``node`` (a result's thumbnail): ``path`` absolute under the
        node's root or relative to it, read over the node's SFTP session (or here, for a
        root on this machine). ValueError when it holds more than ``limit`` bytes or lies
        outside the root; the copy's errors otherwise (ProtocolError, NodeUnreachable)."""
        from spica_core.checksum import Hasher
        from spica_core.executor.file_copy import NodeFile
        from spica_core.node_pool import NodePool

        if isinstance(self._nodes, NodePool):
            root = self._nodes.link(node).node.root
        else:
            root = self._nodes.config.node(node).root
        relative = path
        if path.startswith("/"):
            base = root.rstrip("/") + "/"
            if not path.startswith(base):
                raise ValueError(f"{path}: not under the root {root} of node {node}")
            relative = path[len(base) :]
        src = await self._open_source(NodeFile(node, relative), 0)
        hasher, data = Hasher(), bytearray()
        try:
            while block := await src.read(hasher):
                data += b"".join(block)
                if len(data) > limit:
                    raise ValueError(f"{path} on node {node}: larger than {limit} bytes")
        finally:
            await src.close()
        return bytes(data)

    async def close(self) -> None:
        close = getattr(self._nodes, "close", None)
        if close is not None:
            await close()


def _not_sent(node: str, cause: NodeUnreachable) -> NodeUnreachable:
    """What the changes after an unreachable one on the same node answer: not sent. After a
    lost answer the node is not asked again in this call (nothing else is left unknown)."""
    if isinstance(cause, NodeAnswerLost):
        return NodeUnreachable(node, f"not sent after a lost answer ({cause.reason})")
    return cause

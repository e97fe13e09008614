"""The executor of today: a node agent per host, over SSH (NodePool) or in-process for a
root on this machine (LocalNodes).

The only module outside the node package and its transports that names agent verbs or
builds their arguments: operations ask for a :class:`~spica_core.executor.base.Change` and
get a typed answer back.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from spica_core.executor.base import (
    Capability,
    Change,
    Launch,
    NotSupported,
    Remove,
    Requeue,
    Unlock,
)
from spica_core.node.protocol import (
    Args,
    ErrorCode,
    LaunchArgs,
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
    UnlockArgs,
    UnlockQfinArgs,
    UnlockQfinResult,
)
from spica_core.states import StackState

if TYPE_CHECKING:
    from spica_core.cluster_snapshot import ClusterSnapshot
    from spica_core.config import SpicaConfig
    from spica_core.node_pool import NodeCaller, NodePool

R = TypeVar("R")


class AgentExecutor:
    """Units run by each node's daemon, moved by its agent (``spica node serve``).

    ``nodes`` is the caller's: the console shares its polling pool, the CLI opens one,
    ``stack add`` for a root here passes a LocalNodes. :meth:`close` closes it.
    """

    capabilities = frozenset(
        {Capability.SNAPSHOT, Capability.STAGE, Capability.TAIL, Capability.QFIN_LOCKS}
    )

    def __init__(self, nodes: NodeCaller, hosts: Sequence[str] | None = None) -> None:
        self._nodes = nodes
        self._hosts = tuple(hosts) if hosts is not None else tuple(getattr(nodes, "links", ()))

    @classmethod
    def over_ssh(cls, config: SpicaConfig, nodes: Sequence[str] | None = None) -> AgentExecutor:
        """An executor over a new NodePool of ``nodes`` (default: every configured node)."""
        from spica_core.node_pool import NodePool

        return cls(NodePool(config, nodes=nodes))

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

    def _args(self, change: Change, dry_run: bool) -> Args[StackChange]:
        stack, by = change.stack, change.by
        match change:
            case Launch():
                return LaunchArgs(stack=stack, by=by, priority=change.priority, dry_run=dry_run)
            case Requeue():
                return RequeueArgs(
                    stack=stack,
                    by=by,
                    priority=change.priority,
                    from_start=change.from_start,
                    dry_run=dry_run,
                )
            case Unlock():
                return UnlockArgs(
                    stack=stack, by=by, to=change.to, priority=change.priority, dry_run=dry_run
                )
            case Remove():
                return RemoveArgs(
                    stack=stack,
                    by=by,
                    purge=list(change.purge),
                    stack_id=change.stack_id,
                    dry_run=dry_run,
                )
        raise NotSupported(f"no such change: {type(change).__name__}")

    async def plan(self, change: Change) -> StackChange:
        return await self._request(change.node, self._args(change, True))

    async def apply(self, change: Change) -> StackChange:
        return await self._request(change.node, self._args(change, False))

    async def stage(
        self, node: str, stack: str, commands: bytes, inputs: Sequence[str] | None = None
    ) -> StageResult:
        encoded = base64.b64encode(commands).decode("ascii")
        args = StageArgs(stack=stack, commands_b64=encoded, inputs=list(inputs) if inputs else None)
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

    async def close(self) -> None:
        close = getattr(self._nodes, "close", None)
        if close is not None:
            await close()

"""Nodes whose spica root is on this machine, answered in-process by the agent's own code.

``spica stack add`` run on the node itself (or with its root mounted) stages the stack
locally and needs no SSH; its ``--launch`` still goes through the operations like every
launch. This stands in for the SSH pool there: each request is encoded, answered by an
:class:`~spica_core.node.agent.Agent` over that root and decoded exactly as on the wire, so
the same argument checks, the same exclusive create of the ``.spica`` and the same
claim counter apply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from spica_core.config import SpicaConfig
from spica_core.node import protocol as proto

if TYPE_CHECKING:
    from spica_core.node.agent import Agent

R = TypeVar("R")


class LocalNodes:
    """``request(node, args)`` as :class:`~spica_core.node_pool.NodePool` offers it."""

    def __init__(self, config: SpicaConfig) -> None:
        from spica_core.node.agent import Agent

        self.config = config
        self._agent_class = Agent
        self._agents: dict[str, Agent] = {}
        self._ids = 0

    async def request(self, node: str, args: proto.Args[R]) -> R:
        """The agent's answer as the verb's result type; raises its ProtocolError as the
        pool does. Goes through the bytes of the wire both ways."""
        agent = self._agents.get(node)
        if agent is None:
            root = Path(os.path.expanduser(self.config.node(node).root))
            agent = self._agents[node] = self._agent_class(root)
        self._ids += 1
        line = proto.encode_request(self._ids, args).rstrip(b"\n")
        return proto.result_of(proto.decode_response(agent.respond(line)), type(args))

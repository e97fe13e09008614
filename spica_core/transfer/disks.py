"""Where DataTransfer's disk figures come from: the running monitor, else the nodes.

The same rule as ``spica nodes``: while a monitor (``spica watch``) runs and its figures are
fresh (:meth:`~spica_core.monitor.figures.MonitorStatus.fresh`), its last poll is used and
no node is contacted; otherwise (or when asked) every node is polled once through the
executor. asyncssh is imported only on that path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.config import SpicaConfig
from spica_core.db.types import utcnow
from spica_core.monitor.figures import read_monitor_view


@dataclass(frozen=True)
class ClusterFigures:
    """A cluster snapshot and whose it is: ``monitor`` names the monitor (host:pid) whose
    last poll it is, None when the nodes were polled for this call."""

    cluster: ClusterSnapshot
    monitor: str | None
    age_seconds: float = 0.0

    @property
    def source(self) -> str:
        return f"monitor {self.monitor}" if self.monitor else "poll"

    @property
    def taken_at(self) -> datetime:
        return self.cluster.taken_at


def monitor_figures(engine: Engine, config: SpicaConfig) -> ClusterFigures | None:
    """The running monitor's last poll when fresh; None when there is none (or dbspica does
    not say)."""
    now = utcnow()
    view = read_monitor_view(engine, config, now)
    if view is None or not view.monitor.fresh(now):
        return None
    return ClusterFigures(view.cluster, view.monitor.identity.label, view.monitor.age(now))


async def poll_figures(config: SpicaConfig) -> ClusterFigures:
    """One poll of every configured node through the executor."""
    from spica_core.executor.agents import AgentExecutor

    async with AgentExecutor.over_ssh(config) as executor:
        return ClusterFigures(await executor.snapshot(), None)


def cluster_figures(engine: Engine, config: SpicaConfig, *, poll: bool = False) -> ClusterFigures:
    """The monitor's fresh figures, else (or with ``poll``) a poll of the nodes now."""
    import asyncio

    if not poll:
        found = monitor_figures(engine, config)
        if found is not None:
            return found
    return asyncio.run(poll_figures(config))

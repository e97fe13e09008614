"""What the console's DataTransfer screen shows, read in one go (in a thread).

The disks with their virtual free and the runids waiting (:func:`~spica_core.read_model.
transfer_status`), the runid distribution (:func:`~spica_core.read_model.
transfer_distribution`) and the transfers in progress (:mod:`spica_core.read_model.
transfer_progress`). The disks' reported figures are the console's last snapshot (the
monitor's or its own poll): nothing here contacts a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.config import SpicaConfig
from spica_core.read_model import (
    EVERYTHING,
    RunidDistribution,
    Scope,
    TransferStatus,
    transfer_distribution,
    transfer_status,
)
from spica_core.read_model.transfer_progress import RunidProgress, transfer_progress

#: How long a finished runid stays in the transfers shown.
RECENT = timedelta(hours=1)


@dataclass(frozen=True)
class TransferView:
    read_at: datetime
    status: TransferStatus
    distribution: RunidDistribution
    progress: tuple[RunidProgress, ...]


def read_transfer_view(
    engine: Engine,
    config: SpicaConfig,
    cluster: ClusterSnapshot | None,
    now: datetime,
    scope: Scope = EVERYTHING,
) -> TransferView:
    """One read of the screen's data; raises when dbspica does not answer."""
    status = transfer_status(engine, cluster, config.transfer.space_factor, scope)
    nodes = [n.name for n in config.nodes]
    return TransferView(
        read_at=now,
        status=status,
        distribution=transfer_distribution(engine, scope, nodes),
        progress=tuple(transfer_progress(engine, scope, since=now - RECENT)),
    )


__all__ = ["RECENT", "TransferView", "read_transfer_view"]

"""Keeps dbspica's ``node`` and ``node_disk`` tables in step with the configured cluster."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload

from spica_core.config import SpicaConfig
from spica_core.db.models import Node, NodeDisk


@dataclass(frozen=True)
class RegisterResult:
    added: list[str]
    updated: list[str]


def register_nodes(engine: Engine, config: SpicaConfig) -> RegisterResult:
    """Insert or update one row per configured node (and its partitions).

    Idempotent; nodes that left the config are kept (their history stays), only their rows
    are no longer refreshed.
    """
    added: list[str] = []
    updated: list[str] = []
    with Session(engine) as session, session.begin():
        existing = {
            n.name: n for n in session.scalars(select(Node).options(selectinload(Node.disks)))
        }
        for nc in config.nodes:
            node = existing.get(nc.name)
            values = {
                "host": nc.host,
                "port": nc.port,
                "user": nc.user,
                "root": nc.root,
                "cpus": nc.cpus,
                "ram_gb": nc.ram_gb,
            }
            if node is None:
                node = Node(name=nc.name, status="unknown", **values)
                session.add(node)
                added.append(nc.name)
            elif any(getattr(node, k) != v for k, v in values.items()):
                for k, v in values.items():
                    setattr(node, k, v)
                updated.append(nc.name)
            disks = {d.partition: d for d in node.disks}
            for part in nc.partitions:
                disk = disks.get(part.name)
                if disk is None:
                    node.disks.append(
                        NodeDisk(
                            partition=part.name,
                            total_bytes=part.capacity or 0,
                            free_bytes=part.capacity or 0,
                            reserved_bytes=part.reserved,
                        )
                    )
                elif disk.reserved_bytes != part.reserved:
                    disk.reserved_bytes = part.reserved
    return RegisterResult(added, updated)

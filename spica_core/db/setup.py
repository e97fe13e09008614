"""Bringing a dbspica to life for a configuration: schema at head, nodes registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spica_core.config import SpicaConfig
from spica_core.db.engine import check_reachable, make_engine, unavailable_raised
from spica_core.db.registry import register_nodes
from spica_core.db.schema import upgrade


@dataclass(frozen=True)
class SetupResult:
    url: str
    revision_before: str | None
    revision: str | None
    nodes_added: list[str]
    nodes_updated: list[str]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prepare_database(config: SpicaConfig, *, create: bool) -> SetupResult:
    """Migrate dbspica to head and register the configured nodes; idempotent.

    ``create`` allows a missing SQLite file to be created (``db init``, the demo).
    """
    engine = make_engine(config.db, create=create)
    try:
        check_reachable(engine)
        before, after = upgrade(engine)
        with unavailable_raised(engine):  # dbspica read-only: exit 3, not a traceback
            reg = register_nodes(engine, config)
    finally:
        engine.dispose()
    return SetupResult(config.db.masked_url, before, after, reg.added, reg.updated)

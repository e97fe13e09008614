"""What every command shares: the configuration and dbspica, opened lazily.

Nothing is read or connected before a command needs it, so ``spica --help`` stays fast and a
bad configuration is reported by the command that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from spica_core.config import SpicaConfig


@dataclass
class CliState:
    config_path: str | None = None
    _engines: dict[bool, Engine] = field(default_factory=dict)

    @cached_property
    def config(self) -> SpicaConfig:
        from spica_core.config import load_config

        return load_config(self.config_path)

    def engine(self, *, create: bool = False, require_schema: bool = True) -> Engine:
        """dbspica's engine, checked reachable (and at the expected revision unless told)."""
        from spica_core.db.engine import check_reachable, make_engine
        from spica_core.db.schema import require_current

        engine = make_engine(self.config.db, create=create)
        check_reachable(engine)
        if require_schema:
            require_current(engine)
        return engine


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj

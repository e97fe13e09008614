"""What every command shares: the configuration and dbspica, opened lazily.

Nothing is read or connected before a command needs it, so ``spica --help`` stays fast and a
bad configuration is reported by the command that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from spica_core.config import SpicaConfig
    from spica_core.errors import SpicaError


@dataclass
class CliState:
    config_path: str | None = None
    #: The engine this command opened, so a dbspica failure can be reported with its URL.
    opened: Engine | None = None

    @cached_property
    def config(self) -> SpicaConfig:
        from spica_core.config import load_config

        return load_config(self.config_path)

    def engine(self, *, create: bool = False, require_schema: bool = True) -> Engine:
        """dbspica's engine, checked reachable (and at the expected revision unless told)."""
        from spica_core.db.engine import check_reachable, make_engine
        from spica_core.db.schema import require_current

        engine = make_engine(self.config.db, create=create)
        self.opened = engine
        check_reachable(engine)
        if require_schema:
            require_current(engine)
        return engine

    def db_failure(self, exc: BaseException) -> SpicaError | None:
        """``exc`` as the "dbspica unreachable" error when dbspica failed under the command
        (read-only, gone, away) after it was opened; None for anything else."""
        if self.opened is None:
            return None
        from spica_core.db.engine import db_unavailable, is_unavailable

        return db_unavailable(self.opened, exc) if is_unavailable(exc) else None


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj

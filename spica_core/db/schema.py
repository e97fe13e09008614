"""Schema versioning of dbspica: init, upgrade, status, and the revision guard.

``SCHEMA_REVISION`` is the Alembic head this code expects; read-only commands compare it with
the database's ``alembic_version`` without importing Alembic (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import DBAPIError

from spica_core.db.engine import db_unavailable, masked_url
from spica_core.db.models import ALL_MODELS, Base
from spica_core.errors import SchemaError

SCHEMA_REVISION = "0008"


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    from spica_core.resources import migrations_dir

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    """The database's revision, None when it has no ``alembic_version`` table."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError as exc:
        raise db_unavailable(engine, exc) from None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision``; returns (before, after). Idempotent at head."""
    from alembic import command

    before = current_revision(engine)
    if before is None:
        with engine.connect() as conn:
            foreign = [t for t in inspect(conn).get_table_names() if t in _TABLES]
        if foreign:
            raise SchemaError(
                masked_url(engine),
                f"tables {', '.join(sorted(foreign))} exist but carry no SPICA schema "
                "revision; refusing to migrate over them",
            )
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), revision)
    except DBAPIError as exc:
        raise db_unavailable(engine, exc) from None
    return before, current_revision(engine)


def require_current(engine: Engine) -> None:
    """Raise SchemaError unless the database is at the revision this code expects."""
    revision = current_revision(engine)
    if revision == SCHEMA_REVISION:
        return
    if revision is None:
        raise SchemaError(masked_url(engine), "no SPICA schema (run `spica db init`)")
    raise SchemaError(
        masked_url(engine),
        f"schema revision {revision}, this SPICA needs {SCHEMA_REVISION} (run `spica db upgrade`)",
    )


_TABLES = {m.__tablename__ for m in ALL_MODELS}


@dataclass(frozen=True)
class SchemaStatus:
    url: str
    revision: str | None
    expected: str
    counts: dict[str, int]

    @property
    def up_to_date(self) -> bool:
        return self.revision == self.expected

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "revision": self.revision,
            "expected_revision": self.expected,
            "up_to_date": self.up_to_date,
            "tables": self.counts,
        }


def status(engine: Engine) -> SchemaStatus:
    """Revision and row counts of every dbspica table present."""
    revision = current_revision(engine)
    counts: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            for model in ALL_MODELS:
                table = Base.metadata.tables[model.__tablename__]
                if table.name in present:
                    counts[table.name] = conn.execute(
                        select(func.count()).select_from(table)
                    ).scalar_one()
    except DBAPIError as exc:
        raise db_unavailable(engine, exc) from None
    return SchemaStatus(masked_url(engine), revision, SCHEMA_REVISION, counts)

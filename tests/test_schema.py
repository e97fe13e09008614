"""Migrations, the generated DDL and the models describe one schema, on both engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

from spica_core.db.ddl import mysql_ddl
from spica_core.db.models import ALL_MODELS, Base
from spica_core.db.schema import (
    SCHEMA_REVISION,
    current_revision,
    head_revision,
    require_current,
    status,
    upgrade,
)
from spica_core.errors import SchemaError

ROOT = Path(__file__).resolve().parent.parent


def reflect(engine: Engine) -> dict[str, Any]:
    """A comparable picture of a database's schema (alembic's own table left out)."""
    insp = inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    (f.get("options") or {}).get("ondelete"),
                )
                for f in insp.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
            ),
        }
    return out


def test_schema_revision_constant_is_alembic_head() -> None:
    assert head_revision() == SCHEMA_REVISION


@pytest.mark.empty_db
def test_migrations_equal_create_all(db_url: str, engine_factory, request) -> None:
    migrated = engine_factory(db_url)
    assert upgrade(migrated) == (None, SCHEMA_REVISION)
    if migrated.dialect.name == "sqlite":
        other_url = db_url.replace("dbspica.sqlite", "created.sqlite")
    else:
        other_url = request.getfixturevalue("mysql_url")
    created = engine_factory(other_url)
    Base.metadata.create_all(created)
    got, want = reflect(migrated), reflect(created)
    assert set(got) == {m.__tablename__ for m in ALL_MODELS}
    assert got == want


def test_upgrade_is_idempotent_and_status_counts(db_engine) -> None:
    assert upgrade(db_engine) == (SCHEMA_REVISION, SCHEMA_REVISION)
    require_current(db_engine)
    st = status(db_engine)
    assert st.up_to_date
    assert set(st.counts) == {m.__tablename__ for m in ALL_MODELS}
    assert all(n == 0 for n in st.counts.values())


def test_test_databases_are_copies_of_a_migrated_one(db_url: str, engine_factory, request):
    """The suite's ``db_url`` (a copy made once per process) is what the migrations build."""
    copied = engine_factory(db_url)
    assert current_revision(copied) == SCHEMA_REVISION
    assert all(n == 0 for n in status(copied).counts.values())
    if copied.dialect.name == "sqlite":
        other_url = db_url.replace("dbspica.sqlite", "migrated.sqlite")
    else:
        other_url = request.getfixturevalue("mysql_url")
    migrated = engine_factory(other_url)
    upgrade(migrated)
    assert reflect(copied) == reflect(migrated)


@pytest.mark.empty_db
def test_empty_database_is_not_current(db_url: str, engine_factory) -> None:
    engine = engine_factory(db_url)
    assert current_revision(engine) is None
    try:
        require_current(engine)
    except SchemaError as exc:
        assert "spica db init" in str(exc)
    else:
        raise AssertionError("an empty database passed require_current")


@pytest.mark.empty_db
def test_refuses_to_migrate_over_foreign_tables(db_url: str, engine_factory) -> None:
    engine = engine_factory(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE stack (id INTEGER PRIMARY KEY)"))
    try:
        upgrade(engine)
    except SchemaError as exc:
        assert "stack" in str(exc)
    else:
        raise AssertionError("migrated over an unversioned table")


def test_generated_ddl_is_up_to_date() -> None:
    on_disk = (ROOT / "sql" / "dbspica.mysql.sql").read_text()
    assert on_disk == mysql_ddl(), (
        "sql/dbspica.mysql.sql is stale: run `spica db ddl > sql/dbspica.mysql.sql`"
    )


def test_generated_ddl_builds_the_same_schema_on_mariadb(mysql_url, engine_factory, request):
    ddl_engine = engine_factory(mysql_url)
    sql = "\n".join(ln for ln in mysql_ddl().splitlines() if not ln.startswith("--"))
    with ddl_engine.begin() as conn:
        for statement in sql.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    assert current_revision(ddl_engine) == SCHEMA_REVISION
    created = engine_factory(request.getfixturevalue("mysql_url"))
    Base.metadata.create_all(created)
    assert reflect(ddl_engine) == reflect(created)


def test_text_compares_byte_for_byte_on_both_engines(db_engine) -> None:
    """Names differing only in case are two rows; equality finds its own only; names sort
    alike. On MariaDB, because every table's text is utf8mb4_bin (migration 0008)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from spica_core.db.models import Image, Runid

    with Session(db_engine) as s, s.begin():
        s.add_all([Runid(name="03af19"), Runid(name="03AF19")])
        s.add_all([Image(filename="811001p", filter="u"), Image(filename="811001P", filter="U")])
    with Session(db_engine) as s:
        assert s.scalars(select(Runid.name).where(Runid.name == "03af19")).all() == ["03af19"]
        assert s.scalars(select(Image.filename).where(Image.filter == "U")).all() == ["811001P"]
        assert s.scalars(select(Runid.name).order_by(Runid.name)).all() == ["03AF19", "03af19"]
    if db_engine.dialect.name == "sqlite":
        return
    with db_engine.connect() as conn:
        tables = conn.execute(
            text(
                "SELECT table_name, table_collation FROM information_schema.tables"
                " WHERE table_schema = DATABASE()"
            )
        ).all()
        default = conn.execute(text("SELECT @@collation_database")).scalar()
    assert tables and {collation for _, collation in tables} == {"utf8mb4_bin"}, tables
    assert default == "utf8mb4_bin"  # tables a later migration creates take it too

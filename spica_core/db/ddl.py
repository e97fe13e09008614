"""The MySQL/MariaDB DDL of dbspica, generated from the models for DBAs.

``sql/dbspica.mysql.sql`` is this module's output; a test fails when it is stale.
Regenerate with ``spica db ddl > sql/dbspica.mysql.sql``.
"""

from __future__ import annotations

from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateIndex, CreateTable

from spica_core.db.models import Base
from spica_core.db.schema import SCHEMA_REVISION


def mysql_ddl() -> str:
    dialect = mysql.dialect()
    out = [
        "-- dbspica schema for MySQL/MariaDB, generated from spica_core/db/models.py.",
        "-- Do not edit: regenerate with `spica db ddl > sql/dbspica.mysql.sql`.",
        f"-- Schema revision {SCHEMA_REVISION} (Alembic); `spica db init` also stamps it.",
        "",
        "SET NAMES utf8mb4;",
        "",
    ]
    for table in Base.metadata.sorted_tables:
        create = str(CreateTable(table).compile(dialect=dialect)).strip()
        body, _, options = create.rpartition(")")  # the table options (models.py)
        out.append(f"{body}) {options.strip()};")
        out.append("")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            out.append(f"{str(CreateIndex(index).compile(dialect=dialect)).strip()};")
        if table.indexes:
            out.append("")
    out += [
        "CREATE TABLE alembic_version (",
        "\tversion_num VARCHAR(32) NOT NULL,",
        "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)",
        ") ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;",
        f"INSERT INTO alembic_version (version_num) VALUES ('{SCHEMA_REVISION}');",
    ]
    return "\n".join(line.rstrip() for line in "\n".join(out).splitlines()) + "\n"


if __name__ == "__main__":
    print(mysql_ddl(), end="")

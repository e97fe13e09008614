"""Text compares byte for byte on MySQL/MariaDB too (utf8mb4_bin), as on SQLite

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:10:00.000000

The server's default collation is case-insensitive: ``03af19`` found runid ``03AF19``, a
filter ``U`` matched ``u``, and two names differing only in case could not coexist. Each
table is rewritten once (``CONVERT TO``); no value changes, and no unique key can break,
since byte-exact comparison only tells more values apart. SQLite: nothing to do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _collate(collation: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    database = str(bind.exec_driver_sql("SELECT DATABASE()").scalar())
    quoted = "`" + database.replace("`", "``") + "`"
    # Tables created later (by later migrations) take the database's default.
    op.execute(f"ALTER DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE {collation}")
    for table in sa.inspect(bind).get_table_names():
        name = "`" + table.replace("`", "``") + "`"
        op.execute(f"ALTER TABLE {name} CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}")


def upgrade() -> None:
    _collate("utf8mb4_bin")


def downgrade() -> None:
    _collate("utf8mb4_general_ci")

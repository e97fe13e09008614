"""daemon journal: how far each node daemon journal has been applied

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 03:28:37.738988
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import spica_core.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daemon_journal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("journal_id", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("applied_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", spica_core.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daemon_journal")),
        sa.UniqueConstraint("journal_id", name=op.f("uq_daemon_journal_journal_id")),
    )
    with op.batch_alter_table("daemon_journal", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_daemon_journal_node"), ["node"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("daemon_journal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_daemon_journal_node"))
    op.drop_table("daemon_journal")

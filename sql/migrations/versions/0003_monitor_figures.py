"""monitor: the spica watch processes, the lease of the one that polls, its node figures

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import spica_core.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("interval", sa.Float(), nullable=False),
        sa.Column("started_at", spica_core.db.types.UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", spica_core.db.types.UtcDateTime(), nullable=False),
        sa.Column("polls", sa.BigInteger(), nullable=False),
        sa.Column("stopped_at", spica_core.db.types.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor")),
    )
    with op.batch_alter_table("monitor", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_monitor_heartbeat_at"), ["heartbeat_at"], unique=False)
    op.create_table(
        "monitor_lease",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", spica_core.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_lease")),
    )
    op.create_table(
        "node_figures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("liveness", sa.String(length=32), nullable=False),
        sa.Column("polled_at", spica_core.db.types.UtcDateTime(), nullable=False),
        sa.Column("last_seen", spica_core.db.types.UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("load", sa.JSON(), nullable=True),
        sa.Column("heartbeat_age", sa.Float(), nullable=True),
        sa.Column("heartbeat_pid", sa.Integer(), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("partitions", sa.JSON(), nullable=False),
        sa.Column("running", sa.JSON(), nullable=False),
        sa.Column("monitor_host", sa.String(length=255), nullable=False),
        sa.Column("monitor_pid", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_figures")),
        sa.UniqueConstraint("node", name=op.f("uq_node_figures_node")),
    )


def downgrade() -> None:
    op.drop_table("node_figures")
    op.drop_table("monitor_lease")
    with op.batch_alter_table("monitor", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitor_heartbeat_at"))
    op.drop_table("monitor")

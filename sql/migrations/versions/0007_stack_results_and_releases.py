"""Stack results, frozen stacking releases (stack_release), stack tile and input digest

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 07:40:56.016388
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import spica_core.db.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stack_release",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("frozen_at", spica_core.db.types.UtcDateTime(), nullable=False),
        sa.Column("frozen_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stack_release")),
        sa.UniqueConstraint("name", name=op.f("uq_stack_release_name")),
    )
    op.create_table(
        "stack_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stack_id", sa.Integer(), nullable=False),
        sa.Column("coadd_path", sa.String(length=1024), nullable=True),
        sa.Column("weight_path", sa.String(length=1024), nullable=True),
        sa.Column("catalog_path", sa.String(length=1024), nullable=True),
        sa.Column("thumbnail_path", sa.String(length=1024), nullable=True),
        sa.Column("scamp_inputs", sa.Integer(), nullable=True),
        sa.Column("swarp_inputs", sa.Integer(), nullable=True),
        sa.Column("exptime", sa.Double(), nullable=True),
        sa.Column("seeing", sa.Double(), nullable=True),
        sa.Column("scamp_internal_rms", sa.Double(), nullable=True),
        sa.Column("scamp_external_rms", sa.Double(), nullable=True),
        sa.Column("background", sa.Double(), nullable=True),
        sa.Column("background_rms", sa.Double(), nullable=True),
        sa.Column("completeness", sa.Double(), nullable=True),
        sa.Column("sources", sa.Integer(), nullable=True),
        sa.Column("zero_point", sa.Double(), nullable=True),
        sa.Column("step_seconds", sa.JSON(), nullable=False),
        sa.Column("recorded_at", spica_core.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["stack_id"],
            ["stack.id"],
            name=op.f("fk_stack_result_stack_id_stack"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stack_result")),
        sa.UniqueConstraint("stack_id", name=op.f("uq_stack_result_stack_id")),
    )
    with op.batch_alter_table("stack", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tile", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("inputs_digest", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_stack_tile"), ["tile"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stack", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stack_tile"))
        batch_op.drop_column("inputs_digest")
        batch_op.drop_column("tile")

    op.drop_table("stack_result")
    op.drop_table("stack_release")

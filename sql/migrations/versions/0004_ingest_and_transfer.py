"""image header metadata for `spica ingest`; transfer rows for planning and verified copies

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import spica_core.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_IMAGE = [
    sa.Column("instrument", sa.String(length=32), nullable=True),
    sa.Column("qrunid", sa.String(length=32), nullable=True),
    sa.Column("mjd_obs", sa.Float(), nullable=True),
    sa.Column("gain", sa.Float(), nullable=True),
    sa.Column("saturate", sa.Float(), nullable=True),
    sa.Column("phot_c", sa.Float(), nullable=True),
    sa.Column("phot_k", sa.Float(), nullable=True),
    sa.Column("extensions", sa.Integer(), nullable=True),
    sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("checksum", sa.String(length=80), nullable=True),
    sa.Column("partition", sa.String(length=128), nullable=True),
    sa.Column("repository", sa.String(length=128), nullable=True),
    sa.Column("ingested_at", spica_core.db.types.UtcDateTime(), nullable=True),
]

_TRANSFER = [
    sa.Column("plan_id", sa.String(length=32), nullable=True),
    sa.Column("image_id", sa.Integer(), nullable=True),
    sa.Column("filter", sa.String(length=32), nullable=True),
    sa.Column("source_node", sa.String(length=128), nullable=True),
    sa.Column("destination_partition", sa.String(length=128), nullable=True),
    sa.Column("destination_path", sa.String(length=1024), nullable=True),
    sa.Column("reserved_bytes", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("node_checksum", sa.String(length=80), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("updated_at", spica_core.db.types.UtcDateTime(), nullable=True),
]


def upgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        for column in _IMAGE:
            batch_op.add_column(column)
        batch_op.create_index(batch_op.f("ix_image_repository"), ["repository"], unique=False)
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.alter_column("bytes", server_default=None)
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.alter_column(
            "checksum", existing_type=sa.String(length=64), type_=sa.String(length=80)
        )
        for column in _TRANSFER:
            batch_op.add_column(column)
        batch_op.create_foreign_key(
            batch_op.f("fk_transfer_image_id_image"),
            "image",
            ["image_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(batch_op.f("ix_transfer_plan_id"), ["plan_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_transfer_destination_node_state"),
            ["destination_node", "state"],
            unique=False,
        )
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.alter_column("reserved_bytes", server_default=None)
        batch_op.alter_column("attempts", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_destination_node_state"))
        batch_op.drop_index(batch_op.f("ix_transfer_plan_id"))
        batch_op.drop_constraint(batch_op.f("fk_transfer_image_id_image"), type_="foreignkey")
        for column in reversed(_TRANSFER):
            batch_op.drop_column(column.name)
        batch_op.alter_column(
            "checksum", existing_type=sa.String(length=80), type_=sa.String(length=64)
        )
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_repository"))
        for column in reversed(_IMAGE):
            batch_op.drop_column(column.name)

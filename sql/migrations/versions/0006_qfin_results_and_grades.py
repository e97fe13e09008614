"""QFin results and grades on image, per-CCD figures (image_ccd), who registered an application

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import spica_core.db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _image_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("qf_release", sa.String(length=32), nullable=True),
        sa.Column("qf_at", spica_core.db.types.UtcDateTime(), nullable=True),
        sa.Column("background", sa.Double(), nullable=True),
        sa.Column("background_rms", sa.Double(), nullable=True),
        sa.Column("elongation", sa.Double(), nullable=True),
        sa.Column("sources", sa.Integer(), nullable=True),
        sa.Column("psf_stars", sa.Integer(), nullable=True),
        sa.Column("ccds_measured", sa.Integer(), nullable=True),
        sa.Column("report_path", sa.String(length=1024), nullable=True),
        sa.Column("weight_path", sa.String(length=1024), nullable=True),
        sa.Column("flag_path", sa.String(length=1024), nullable=True),
        sa.Column("qf_error", sa.Text(), nullable=True),
        sa.Column("grade_proposal", sa.String(length=8), nullable=True),
        sa.Column("grade_reasons", sa.JSON(), nullable=True),
        sa.Column("grade_comment", sa.Text(), nullable=True),
        sa.Column("graded_by", sa.String(length=64), nullable=True),
        sa.Column("graded_at", spica_core.db.types.UtcDateTime(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        for column in _image_columns():
            batch_op.add_column(column)
    with op.batch_alter_table("application", schema=None) as batch_op:
        batch_op.add_column(sa.Column("release", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("registered_by", sa.String(length=64), nullable=True))
    op.create_table(
        "image_ccd",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("ccd", sa.Integer(), nullable=False),
        sa.Column("extname", sa.String(length=32), nullable=True),
        sa.Column("seeing", sa.Double(), nullable=True),
        sa.Column("elongation", sa.Double(), nullable=True),
        sa.Column("sources", sa.Integer(), nullable=True),
        sa.Column("psf_stars", sa.Integer(), nullable=True),
        sa.Column("background", sa.Double(), nullable=True),
        sa.Column("background_rms", sa.Double(), nullable=True),
        sa.Column("saturation", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("image_id", "ccd"),
    )


def downgrade() -> None:
    op.drop_table("image_ccd")
    with op.batch_alter_table("application", schema=None) as batch_op:
        batch_op.drop_column("registered_by")
        batch_op.drop_column("release")
    with op.batch_alter_table("image", schema=None) as batch_op:
        for column in reversed(_image_columns()):
            batch_op.drop_column(column.name)

"""image: header and measured figures in double precision (MariaDB's FLOAT keeps 6 digits)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (
    "ra",
    "dec",
    "exptime",
    "airmass",
    "seeing",
    "skyprobe",
    "mjd_obs",
    "gain",
    "saturate",
    "phot_c",
    "phot_k",
)


def upgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.alter_column(name, existing_type=sa.Float(), type_=sa.Double())


def downgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.alter_column(name, existing_type=sa.Double(), type_=sa.Float())

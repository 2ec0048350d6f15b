"""Pool memberships record the pool generation at which the member joined.

The planner keys a held download (cancelled, or failed permanently) on the declaration that
placed the model on the backend. Keyed on the pool's generation, any edit of the pool (another
model or backend added) re-queued every held download of the pool; keyed on when the backend
and the model joined, only re-joining does. Existing memberships are dated at their pool's
current generation, which keeps the declaration keys of held downloads exactly as they were.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("pool_backends", "pool_models")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("joined_generation", sa.Integer(), nullable=True))
        op.execute(
            f"UPDATE {table} SET joined_generation = "  # noqa: S608 (fixed table names)
            f"(SELECT generation FROM pools WHERE pools.id = {table}.pool_id)"
        )
        with op.batch_alter_table(table) as batch:
            batch.alter_column("joined_generation", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("joined_generation")

"""Models carry their ``vllm serve`` engine arguments: a nullable JSON column, NULL for none.

A node agent starts a model's instances with the arguments its ``vllm:`` block declares
(`runtimestate.desired.engineargs`). Existing models declare none, so the column is nullable
with no default and nothing is backfilled. Downgrading drops it.

Neither direction rebuilds a table on SQLite: adding a nullable column is a plain
``ALTER TABLE ... ADD COLUMN``, and dropping one without an index or constraint is ``ALTER
TABLE ... DROP COLUMN`` (SQLite 3.35 and later), so the pool memberships that reference
``models`` (``ON DELETE CASCADE``; see 0009) are never touched.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("models", sa.Column("vllm", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("models", "vllm")

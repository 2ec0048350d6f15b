"""Rolling upgrades (issue 19): a model's update policy, and upgrades asked for by hand.

- ``models.update_policy`` (not null, ``manual`` for existing rows) and
  ``models.max_unavailable`` (not null, 1 for existing rows);
- ``upgrade_requests``: one row per (model canonical name, backend or ``""``) that
  ``llmctl model upgrade`` asked for, until the cycle has rolled it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "models",
        sa.Column("update_policy", sa.String(length=16), nullable=False, server_default="manual"),
    )
    op.add_column(
        "models", sa.Column("max_unavailable", sa.Integer(), nullable=False, server_default="1")
    )
    op.create_table(
        "upgrade_requests",
        sa.Column("model", sa.String(length=600), nullable=False),
        sa.Column("backend", sa.String(length=63), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "backend", name=op.f("pk_upgrade_requests")),
    )


def downgrade() -> None:
    op.drop_table("upgrade_requests")
    op.drop_column("models", "max_unavailable")
    op.drop_column("models", "update_policy")

"""Observed status per backend, and the record of models llmctl pulled.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backend_status",
        sa.Column("backend", sa.String(length=63), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("observed_generation", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("backend", name=op.f("pk_backend_status")),
    )
    op.create_table(
        "managed_models",
        sa.Column("backend", sa.String(length=63), nullable=False),
        sa.Column("model_key", sa.String(length=600), nullable=False),
        sa.Column("model", sa.String(length=600), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("backend", "model_key", name=op.f("pk_managed_models")),
    )


def downgrade() -> None:
    op.drop_table("managed_models")
    op.drop_table("backend_status")

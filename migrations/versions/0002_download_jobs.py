"""The download queue's table (dwqueue.schema): download_jobs and its indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("state IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "download_jobs",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("backend", sa.String(length=63), nullable=False),
        sa.Column("model", sa.String(length=600), nullable=False),
        sa.Column("model_key", sa.String(length=600), nullable=False),
        sa.Column("declaration", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=255), nullable=True),
        sa.Column("completed", sa.BigInteger(), nullable=True),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("rate_bps", sa.Float(), nullable=True),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_class", sa.String(length=32), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_download_jobs")),
    )
    op.create_index(
        "ix_download_jobs_backend_state", "download_jobs", ["backend", "state"], unique=False
    )
    op.create_index(
        "ix_download_jobs_claim_order",
        "download_jobs",
        ["state", "next_attempt_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_download_jobs_one_active",
        "download_jobs",
        ["backend", "model_key"],
        unique=True,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_download_jobs_one_active", table_name="download_jobs")
    op.drop_index("ix_download_jobs_claim_order", table_name="download_jobs")
    op.drop_index("ix_download_jobs_backend_state", table_name="download_jobs")
    op.drop_table("download_jobs")

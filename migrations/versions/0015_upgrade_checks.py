"""Upgrade checks: the last look at each model's upstream revision (issue 19).

``upgrade_checks`` holds one row per (source, reference): when a process last claimed the check,
when it recorded the answer, the revision seen (a registry manifest's digest, a hub commit) and
since when, and the last error. Self-contained: it creates one table and touches no other.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "upgrade_checks",
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=512), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latest", sa.String(length=128), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("source", "reference", name=op.f("pk_upgrade_checks")),
    )


def downgrade() -> None:
    op.drop_table("upgrade_checks")

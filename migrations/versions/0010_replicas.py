"""The replicas that run backend cycles, their heartbeat and their latest cycle.

``llmctl status`` shows the serve replicas that are running and when the last backend cycle
ran and how long it took; nothing recorded either before this revision (a cycle's summary went
to NATS and the log only). Self-contained: it creates one table and touches no other.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "controller_replicas",
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stale_after_s", sa.Float(), nullable=True),
        sa.Column("cycle", sa.Integer(), nullable=True),
        sa.Column("cycle_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cycle_duration_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_controller_replicas")),
    )


def downgrade() -> None:
    op.drop_table("controller_replicas")

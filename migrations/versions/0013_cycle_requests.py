"""Cycle requests: a trigger on NATS is acted on only when the database confirms it.

``cycle_requests`` holds one row per backend cycle a CLI command asked for after a committed
change (a random id and when it was asked); the command publishes the id on
``<prefix>.v1.control.trigger`` and ``serve`` runs a cycle only for an id it finds (and
deletes). Self-contained: it creates one table and touches no other.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cycle_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cycle_requests")),
    )
    op.create_index(
        op.f("ix_cycle_requests_requested_at"), "cycle_requests", ["requested_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_cycle_requests_requested_at"), table_name="cycle_requests")
    op.drop_table("cycle_requests")

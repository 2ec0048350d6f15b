"""The time of a backend's last successful probe gets its own column in backend_status.

It moves every cycle while the rest of the status document rarely does; kept apart, a steady
cycle rewrites no document. Documents written before this revision still carry the time,
which `runtimestate.reconcile.status.load_states` falls back to until the next cycle sets the column.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backend_status") as batch:
        batch.add_column(sa.Column("last_ok_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backend_status") as batch:
        batch.drop_column("last_ok_at")

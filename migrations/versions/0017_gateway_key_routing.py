"""Gateway key routing: a key's default routing policy, and a change counter per key.

``gateway_keys.policy`` is the resolver policy a key's requests use when they name none
(``X-Llmctl-Policy``); null: the gateway's default. ``gateway_keys.generation`` grows by one
with every change of a key (created at 1, then each update and the revocation), so that a
gateway replica learns that keys changed from one cheap sum instead of reading them all.
Touches only ``gateway_keys``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_keys") as table:
        table.add_column(sa.Column("policy", sa.String(length=32), nullable=True))
        table.add_column(
            sa.Column("generation", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )


def downgrade() -> None:
    with op.batch_alter_table("gateway_keys") as table:
        table.drop_column("generation")
        table.drop_column("policy")

"""The Postgres claim function `dwqueue_claim` (dwqueue.claims): one call leases due jobs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Postgres only: on SQLite the claim stays in Python (`dwqueue.claims.sqlite`), so both steps do
nothing there. The function's text is version 1 of ``dwqueue/sql/claim_v<N>.sql``, frozen: a
change to it is a new file and a new revision, never an edit of that file.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from dwqueue import claims

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(claims.function_text(1))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION dwqueue_claim(text, integer, timestamptz, timestamptz, text[], "
            "integer[], integer)"
        )

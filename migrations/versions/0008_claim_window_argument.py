"""`dwqueue_claim` takes its window as an argument: one claim algorithm for both dialects.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Version 3 of the function (``dwqueue/sql/claim_v3.sql``) walks as version 2 did, but reads the
number of rows a pass may read from its last argument, `dwqueue.claims.window`, which the
SQLite path uses too: the formula is written once. It is a new, eight-argument overload; the
seven-argument version 2 stays for replicas older than this revision (they keep claiming, and
exclude each other through the same advisory locks). Postgres only, as 0004.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from dwqueue import claims

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(claims.function_text(3))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION dwqueue_claim(text, integer, timestamptz, timestamptz, text[], "
            "integer[], integer, integer)"
        )

"""`dwqueue_claim` looks past the jobs of backends it found full (starvation fix).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

The walk of revision 0004 looked at a window of the oldest due jobs (30 for two jobs per claim)
and counted the jobs of backends at their limit in it, so once the oldest backends in the
queue were full, every claim came back empty while younger backends had room: with 12 jobs
each for five backends in a row, the last two never ran. This revision excludes the backends
it has found full from the walk and, when the window was spent on them, walks again past them
(at most once per backend found full). Postgres only, as 0004; downgrade restores 0004's text.
The function's text is version 2 of ``dwqueue/sql/claim_v<N>.sql``.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from dwqueue import claims

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(claims.function_text(2))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        previous = claims.function_text(1)
        op.execute(previous.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))

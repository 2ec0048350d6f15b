"""Models and pools carry labels, as backends do: a JSON mapping, empty for existing rows.

Label selectors (``-l``) work on every list, so every kind needs labels. The column has the
type and default of ``backends.labels`` (JSON, not null, no server default: the application
writes ``{}``); existing models and pools get empty labels. Downgrading drops the columns.

On SQLite, making the column NOT NULL (and dropping it) rebuilds the table, and dropping the
old table deletes the pool memberships that reference it (``ON DELETE CASCADE``; foreign keys
are on and cannot be turned off inside the migration's transaction). The memberships are read
before and written back after, so no model or backend leaves a pool on upgrade or downgrade.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("models", "pools")
_MEMBERSHIPS = ("pool_backends", "pool_models")


@contextlib.contextmanager
def _memberships_kept() -> Iterator[None]:
    """Keep every membership row across SQLite's table rebuilds; nothing to do on Postgres."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    saved = {
        name: [dict(row._mapping) for row in bind.execute(sa.text(f"SELECT * FROM {name}"))]  # noqa: S608 (fixed names)
        for name in _MEMBERSHIPS
    }
    yield
    for name, rows in saved.items():
        op.execute(f"DELETE FROM {name}")  # noqa: S608 (fixed table names)
        if rows:
            table = sa.table(name, *(sa.column(key) for key in rows[0]))
            bind.execute(table.insert(), rows)


def upgrade() -> None:
    with _memberships_kept():
        for table in _TABLES:
            with op.batch_alter_table(table) as batch:
                batch.add_column(sa.Column("labels", sa.JSON(), nullable=True))
            op.execute(f"UPDATE {table} SET labels = '{{}}'")  # noqa: S608 (fixed table names)
            with op.batch_alter_table(table) as batch:
                batch.alter_column("labels", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with _memberships_kept():
        for table in _TABLES:
            with op.batch_alter_table(table) as batch:
                batch.drop_column("labels")

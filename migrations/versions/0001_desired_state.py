"""Desired-state tables (backends, models, pools, memberships) and the default pool.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _stamps() -> list[sa.Column[object]]:
    return [
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "backends",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("prune", sa.String(length=16), nullable=False),
        sa.Column("max_pulls", sa.Integer(), nullable=False),
        sa.Column("credential_kind", sa.String(length=16), nullable=True),
        sa.Column("credential_env", sa.String(length=255), nullable=True),
        sa.Column("credential_ciphertext", sa.Text(), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backends")),
        sa.UniqueConstraint("name", name=op.f("uq_backends_name")),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=600), nullable=False),
        sa.Column("canonical_name", sa.String(length=600), nullable=False),
        sa.Column("context_length", sa.Integer(), nullable=True),
        sa.Column("capabilities", sa.JSON(), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("canonical_name", name=op.f("uq_models_canonical_name")),
    )
    pools = op.create_table(
        "pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pools")),
        sa.UniqueConstraint("name", name=op.f("uq_pools_name")),
    )
    _membership("pool_backends", "backend_id", "backends")
    _membership("pool_models", "model_id", "models")
    now = dt.datetime.now(dt.UTC)
    op.bulk_insert(
        pools,
        [
            {
                "name": "default",
                "purpose": "backends and models join this pool unless told otherwise",
                "generation": 1,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )


def _membership(table: str, column: str, target: str) -> None:
    op.create_table(
        table,
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column(column, sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            [column],
            [f"{target}.id"],
            name=op.f(f"fk_{table}_{column}_{target}"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pools.id"], name=op.f(f"fk_{table}_pool_id_pools"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pool_id", column, name=op.f(f"pk_{table}")),
    )
    op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_pool_models_model_id"), table_name="pool_models")
    op.drop_table("pool_models")
    op.drop_index(op.f("ix_pool_backends_backend_id"), table_name="pool_backends")
    op.drop_table("pool_backends")
    op.drop_table("pools")
    op.drop_table("models")
    op.drop_table("backends")

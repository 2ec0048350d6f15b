"""Residency: LoRA adapters placed through pools, warm models, backends' memory and disk.

- ``adapters``: a LoRA adapter (name, base model, source, optional revision, labels), with the
  generation and timestamps of every spec table; ``pool_adapters`` places it through pools,
  dated like the other memberships (``joined_generation``, see 0006).
- ``models.warm`` (not null, false for existing rows) and ``models.keep_alive`` (NULL: the
  backend's default): a model kept loaded on Ollama backends.
- ``backends.vram_bytes`` and ``backends.disk_bytes`` (NULL: not declared): the memory budget
  warm models may use and the disk pulls are admitted against.
- ``managed_adapters``: adapters llmctl loaded onto a backend (what ``prune: managed`` may
  unload); ``preloaded_models``: models llmctl preloaded (what it unloads once they stop being
  warm). No foreign keys, like ``managed_models``: a deleted backend's rows go with the cycle.

Every change adds a table or a column, so neither direction rebuilds a table on SQLite (the
memberships referencing ``models`` and ``backends`` are never touched). Downgrading drops them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("base_model", sa.String(length=600), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("revision", sa.String(length=255), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapters")),
        sa.UniqueConstraint("name", name=op.f("uq_adapters_name")),
    )
    op.create_table(
        "pool_adapters",
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("joined_generation", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"],
            ["adapters.id"],
            name=op.f("fk_pool_adapters_adapter_id_adapters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["pools.id"],
            name=op.f("fk_pool_adapters_pool_id_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool_id", "adapter_id", name=op.f("pk_pool_adapters")),
    )
    op.create_index(
        op.f("ix_pool_adapters_adapter_id"), "pool_adapters", ["adapter_id"], unique=False
    )
    op.add_column(
        "models", sa.Column("warm", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("models", sa.Column("keep_alive", sa.String(length=32), nullable=True))
    op.add_column("backends", sa.Column("vram_bytes", sa.BigInteger(), nullable=True))
    op.add_column("backends", sa.Column("disk_bytes", sa.BigInteger(), nullable=True))
    op.create_table(
        "managed_adapters",
        sa.Column("backend", sa.String(length=63), nullable=False),
        sa.Column("adapter", sa.String(length=255), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("backend", "adapter", name=op.f("pk_managed_adapters")),
    )
    op.create_table(
        "preloaded_models",
        sa.Column("backend", sa.String(length=63), nullable=False),
        sa.Column("model_key", sa.String(length=600), nullable=False),
        sa.Column("model", sa.String(length=600), nullable=False),
        sa.Column("preloaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("backend", "model_key", name=op.f("pk_preloaded_models")),
    )


def downgrade() -> None:
    op.drop_table("preloaded_models")
    op.drop_table("managed_adapters")
    op.drop_column("backends", "disk_bytes")
    op.drop_column("backends", "vram_bytes")
    op.drop_column("models", "keep_alive")
    op.drop_column("models", "warm")
    op.drop_index(op.f("ix_pool_adapters_adapter_id"), table_name="pool_adapters")
    op.drop_table("pool_adapters")
    op.drop_table("adapters")

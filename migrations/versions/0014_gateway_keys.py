"""Gateway keys and prices: virtual API keys (hashed), their spend per period, model prices.

``gateway_keys`` holds one row per virtual API key of ``llmctl gateway`` (the SHA-256 of its
secret, never the secret), ``gateway_key_spend`` what each key spent per budget period, and
``model_prices`` the price operators declare per model. Self-contained: it creates three
tables and touches no other.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("pools", sa.JSON(), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("budget_microusd", sa.BigInteger(), nullable=True),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_gateway_keys_name")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_gateway_keys_secret_sha256")),
    )
    op.create_table(
        "gateway_key_spend",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("spent_picousd", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["gateway_keys.id"],
            name=op.f("fk_gateway_key_spend_key_id_gateway_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "period", name=op.f("pk_gateway_key_spend")),
    )
    op.create_table(
        "model_prices",
        sa.Column("model", sa.String(length=600), nullable=False),
        sa.Column("input_microusd", sa.BigInteger(), nullable=False),
        sa.Column("output_microusd", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_model_prices")),
    )


def downgrade() -> None:
    op.drop_table("model_prices")
    op.drop_table("gateway_key_spend")
    op.drop_table("gateway_keys")

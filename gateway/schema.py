"""The gateway's tables: virtual API keys, their spend per period, and the price table.

Owned by `gateway`; `migrations/env.py` combines this ``metadata`` with the other packages'
(revision 0014 creates the tables, 0017 adds the keys' routing policy and generation). Only
`gateway.keystore` and `gateway.pricestore` use these ORM classes; rows never leave them
(callers get the frozen values of `gateway.keys` and `gateway.prices`). A key's secret is
never stored: only its SHA-256 (`gateway.keys`).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from dwqueue import schema as dwqueue_schema

metadata = sa.MetaData(naming_convention=dwqueue_schema.NAMING_CONVENTION)
UtcDateTime = dwqueue_schema.UtcDateTime


class Base(orm.DeclarativeBase):
    metadata = metadata


class KeyRow(Base):
    """A virtual API key. ``secret_sha256`` is the hex SHA-256 of the secret (the gateway
    looks keys up by it); ``prefix`` is the secret's first characters, for people to tell
    keys apart. Empty ``models`` and ``pools`` allow every model. Money is in micro-USD."""

    __tablename__ = "gateway_keys"

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(63), unique=True)
    secret_sha256: orm.Mapped[str] = orm.mapped_column(sa.String(64), unique=True)
    prefix: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    models: orm.Mapped[list[str]] = orm.mapped_column(sa.JSON, default=list)
    pools: orm.Mapped[list[str]] = orm.mapped_column(sa.JSON, default=list)
    rpm: orm.Mapped[int | None] = orm.mapped_column(sa.Integer)
    tpm: orm.Mapped[int | None] = orm.mapped_column(sa.Integer)
    budget_microusd: orm.Mapped[int | None] = orm.mapped_column(sa.BigInteger)
    period: orm.Mapped[str] = orm.mapped_column(sa.String(8), default="none")
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime)
    revoked_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UtcDateTime)
    policy: orm.Mapped[str | None] = orm.mapped_column(sa.String(32))  # routing default
    generation: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, default=1, server_default=sa.text("1")
    )  # grows with every change (revision 0017): replicas poll the sum


class KeySpendRow(Base):
    """What a key spent in one budget period (``2026-12-06``, ``2026-12``, or ``all``), in
    pico-USD so that one token at any declared price adds a whole number. Written in
    batches by the gateway (`gateway.keystore.add_spend`); removed with its key."""

    __tablename__ = "gateway_key_spend"

    key_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("gateway_keys.id", ondelete="CASCADE"), primary_key=True
    )
    period: orm.Mapped[str] = orm.mapped_column(sa.String(10), primary_key=True)
    spent_picousd: orm.Mapped[int] = orm.mapped_column(sa.BigInteger, default=0)
    updated_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime)


class PriceRow(Base):
    """The price of a model as the operator declared it: micro-USD per million input
    (prompt) and output (completion) tokens. ``model`` is the name as requests give it."""

    __tablename__ = "model_prices"

    model: orm.Mapped[str] = orm.mapped_column(sa.String(600), primary_key=True)
    input_microusd: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    output_microusd: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    updated_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime)

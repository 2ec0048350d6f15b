"""The download queue's table, `download_jobs`, in dwqueue's own ``MetaData``.

`migrations/env.py` combines this ``metadata`` with the other packages'; revision 0002 creates
the table. Only `dwqueue.rows`, `dwqueue.queue` and `dwqueue.leases` touch it. No foreign key
points at another package's table: a job names its backend by name, and the reconciler cancels
the jobs of a deleted backend.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware, on SQLite too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# The predicate of the "one active job per backend and model" index, on both dialects.
ACTIVE_PREDICATE = sa.text("state IN ('queued', 'running')")

download_jobs = sa.Table(
    "download_jobs",
    metadata,
    sa.Column("id", sa.String(26), primary_key=True),
    sa.Column("backend", sa.String(63), nullable=False),
    sa.Column("model", sa.String(600), nullable=False),
    sa.Column("model_key", sa.String(600), nullable=False),
    sa.Column("declaration", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", UtcDateTime, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("digest", sa.String(255), nullable=True),
    sa.Column("completed", sa.BigInteger, nullable=True),
    sa.Column("total", sa.BigInteger, nullable=True),
    sa.Column("rate_bps", sa.Float, nullable=True),
    sa.Column("eta_s", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_class", sa.String(32), nullable=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=True),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Index(
        "ix_download_jobs_one_active",
        "backend",
        "model_key",
        unique=True,
        postgresql_where=ACTIVE_PREDICATE,
        sqlite_where=ACTIVE_PREDICATE,
    ),
    sa.Index("ix_download_jobs_backend_state", "backend", "state"),
    sa.Index("ix_download_jobs_claim_order", "state", "next_attempt_at", "id"),
)

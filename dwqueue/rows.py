"""What the queue's store modules share: rows to `Job` values, `Change`, and dialect helpers.

Used by `dwqueue.queue`, `dwqueue.leases` and `dwqueue.claims` only; rows never leave those
modules.
Nothing here commits: every function runs inside the caller's transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import events, jobs, schema

TABLE = schema.download_jobs
COLUMNS = TABLE.c
# The columns `job_from_values` reads, in its order; a query feeding it selects exactly these.
FIELDS = (
    "id", "backend", "model", "model_key", "declaration", "state", "attempts", "max_attempts",
    "next_attempt_at", "lease_owner", "lease_expires_at", "status", "digest", "completed",
    "total", "rate_bps", "eta_s", "error", "error_class", "seq", "created_at", "updated_at",
    "started_at", "finished_at",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Change:
    """A job after a store call, and the event to publish once the caller has committed.

    ``event`` is None when the call changed nothing worth telling (an idempotent repeat).
    """

    job: jobs.Job
    event: events.DownloadEvent | None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def to_job(row: sa.RowMapping) -> jobs.Job:
    progress = jobs.Progress(
        status=row["status"],
        digest=row["digest"],
        completed=row["completed"],
        total=row["total"],
        rate_bps=row["rate_bps"],
        eta_s=row["eta_s"],
    )
    error_class = row["error_class"]
    return jobs.Job(
        id=jobs.JobId(row["id"]),
        backend=row["backend"],
        model=row["model"],
        model_key=row["model_key"],
        declaration=row["declaration"],
        state=jobs.JobState(row["state"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        next_attempt_at=row["next_attempt_at"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        progress=progress,
        error=row["error"],
        error_class=None if error_class is None else jobs.ErrorClass(error_class),
        seq=row["seq"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def job_from_values(values: Sequence[Any]) -> jobs.Job:
    """The `Job` of a driver-level row whose columns are `FIELDS`, in that order (a row that did
    not pass through SQLAlchemy's result layer: `dwqueue.claims` on Postgres). Timestamps are
    made UTC, as `schema.UtcDateTime` does for rows that did."""
    (job_id, backend, model, model_key, declaration, state, attempts, max_attempts, next_attempt_at,
     lease_owner, lease_expires_at, status, digest, completed, total, rate_bps, eta_s, error,
     error_class, seq, created_at, updated_at, started_at, finished_at) = values  # fmt: skip
    return jobs.Job(
        id=jobs.JobId(job_id),
        backend=backend,
        model=model,
        model_key=model_key,
        declaration=declaration,
        state=jobs.JobState(state),
        attempts=attempts,
        max_attempts=max_attempts,
        next_attempt_at=next_attempt_at.astimezone(dt.UTC),
        lease_owner=lease_owner,
        lease_expires_at=_utc(lease_expires_at),
        progress=jobs.Progress(status, digest, completed, total, rate_bps, eta_s),
        error=error,
        error_class=None if error_class is None else jobs.ErrorClass(error_class),
        seq=seq,
        created_at=created_at.astimezone(dt.UTC),
        updated_at=updated_at.astimezone(dt.UTC),
        started_at=_utc(started_at),
        finished_at=_utc(finished_at),
    )


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


def change(row: sa.RowMapping, cls: type[events.DownloadEvent], now: dt.datetime) -> Change:
    """The `Change` for a row an INSERT or UPDATE ... RETURNING gave back, with event ``cls``."""
    job = to_job(row)
    return Change(job, events.of(cls, job, now))


async def update_returning(
    session: AsyncSession, where: sa.ColumnElement[bool], values: Mapping[str, Any]
) -> list[sa.RowMapping]:
    """UPDATE the rows matching ``where`` and return them as they are afterwards.

    Every change bumps the job's event sequence number, so each returned row carries the
    ``seq`` of the event its caller is about to build.
    """
    statement = (
        sa.update(TABLE)
        .where(where)
        .values({**values, "seq": COLUMNS.seq + 1})
        .returning(*COLUMNS)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    return [row._mapping for row in result.all()]


async def fetch(session: AsyncSession, job_id: str) -> sa.RowMapping | None:
    row = (await session.execute(sa.select(TABLE).where(COLUMNS.id == job_id))).first()
    return None if row is None else row._mapping


def is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


async def take_sqlite_write_lock(session: AsyncSession) -> None:
    """On SQLite, start the write transaction now, so reads that follow see the latest data
    and no other writer can commit until ours ends (a no-op write takes SQLite's one write
    lock, waiting for it up to the busy timeout). Does nothing on Postgres."""
    if is_sqlite(session):
        await session.execute(sa.update(TABLE).where(sa.false()).values(id=COLUMNS.id))

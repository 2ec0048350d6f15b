"""The queue's front door: enqueue, get, list, latest, cancel and retry download jobs.

Called by the backend cycle (enqueue the pulls a plan asks for, cancel jobs nobody wants), the
CLI (list, cancel, retry) and `watch`. Workers use `dwqueue.leases` instead. Every function takes
an ``AsyncSession`` and never commits: the caller owns the transaction, and publishes the
returned `Change.event` (if any) only after its commit succeeded. Runs the same on Postgres and
SQLite.

Semantics worth knowing:
- At most one queued or running job per (backend, model_key), enforced by a partial unique
  index; `enqueue` is idempotent and returns the active job when there is one.
- Cancel is durable: a cancelled job stays cancelled. Whether to enqueue that model again is the
  planner's decision; it compares the ``declaration`` of the latest job (`latest`) with the
  current one.
- Retry re-queues the same job (same id, so a `watch` of it continues) with attempts reset.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import events, jobs, rows, schema

DEFAULT_MAX_ATTEMPTS = 5
_C = rows.COLUMNS
_ACTIVE = [state.value for state in jobs.ACTIVE_STATES]


class QueueError(ValueError):
    """A request the queue refuses; the message names the job and why."""


async def enqueue(
    session: AsyncSession,
    backend: str,
    model: str,
    *,
    model_key: str | None = None,
    declaration: str = "",
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: dt.datetime | None = None,
) -> rows.Change:
    """Queue a pull of ``model`` onto ``backend``, unless one is already queued or running.

    ``model_key`` is the comparison form of the name (default: ``model`` itself); two names with
    one key are one model. Idempotent: when an active job exists, returns it with ``event``
    None; otherwise inserts a job due now and returns it with a `DownloadQueued` event. Safe
    under concurrency (the index decides; the loser reads the winner's job).
    """
    now = now or rows.utcnow()
    key = model if model_key is None else model_key
    events.subject(events.DEFAULT_PREFIX, backend, "x")  # refuse a name that cannot be a token
    if max_attempts < 1:
        raise QueueError(f"max_attempts must be at least 1, got {max_attempts}")
    values = _new_row(backend, model, key, declaration, max_attempts, now)
    for _ in range(5):  # only loops when the active job finished between insert and select
        inserted = (await session.execute(_insert_if_absent(session, values))).first()
        if inserted is not None:
            return rows.change(inserted._mapping, events.DownloadQueued, now)
        existing = await _active(session, backend, key)
        if existing is not None:
            return rows.Change(existing, None)
    raise QueueError(f"could not enqueue {model!r} on {backend!r}: the active job kept changing")


def _new_row(
    backend: str, model: str, key: str, declaration: str, max_attempts: int, now: dt.datetime
) -> dict[str, Any]:
    return {
        "id": jobs.new_job_id(now),
        "backend": backend,
        "model": model,
        "model_key": key,
        "declaration": declaration,
        "state": jobs.JobState.QUEUED.value,
        "attempts": 0,
        "max_attempts": max_attempts,
        "next_attempt_at": now,
        "status": "",
        "seq": 1,
        "created_at": now,
        "updated_at": now,
    }


def _insert_if_absent(session: AsyncSession, values: dict[str, Any]) -> sa.Executable:
    insert = sqlite.insert if rows.is_sqlite(session) else postgresql.insert
    return (
        insert(rows.TABLE)
        .values(values)
        .on_conflict_do_nothing(
            index_elements=[_C.backend, _C.model_key], index_where=schema.ACTIVE_PREDICATE
        )
        .returning(*_C)
    )


async def _active(session: AsyncSession, backend: str, key: str) -> jobs.Job | None:
    query = sa.select(rows.TABLE).where(
        _C.backend == backend, _C.model_key == key, _C.state.in_(_ACTIVE)
    )
    row = (await session.execute(query)).first()
    return None if row is None else rows.to_job(row._mapping)


async def get(session: AsyncSession, job_id: str) -> jobs.Job | None:
    """The job with this id, or None."""
    row = await rows.fetch(session, job_id)
    return None if row is None else rows.to_job(row)


async def list_jobs(
    session: AsyncSession,
    *,
    backend: str | None = None,
    model_key: str | None = None,
    states: Collection[jobs.JobState] | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    backends: Collection[str] | None = None,
) -> list[jobs.Job]:
    """Jobs matching every filter given, in creation order (or newest first); ``backends``
    keeps the jobs of those backends only (empty: none)."""
    query = sa.select(rows.TABLE)
    if backend is not None:
        query = query.where(_C.backend == backend)
    if backends is not None:
        query = query.where(_C.backend.in_(sorted(backends)))
    if model_key is not None:
        query = query.where(_C.model_key == model_key)
    if states is not None:
        query = query.where(_C.state.in_([state.value for state in states]))
    order = [_C.created_at.desc(), _C.id.desc()] if newest_first else [_C.created_at, _C.id]
    query = query.order_by(*order).limit(limit)
    return [rows.to_job(row._mapping) for row in (await session.execute(query)).all()]


async def latest(
    session: AsyncSession, *, backend: str | None = None
) -> dict[tuple[str, str], jobs.Job]:
    """The newest job of every (backend, model_key), in one query: what the planner compares
    with the desired state (is it active, did it fail, was it cancelled, for which declaration)."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=[_C.backend, _C.model_key], order_by=[_C.created_at.desc(), _C.id.desc()]
        )
        .label("rank")
    )
    inner = sa.select(rows.TABLE, rank)
    if backend is not None:
        inner = inner.where(_C.backend == backend)
    ranked = inner.subquery()
    query = sa.select(*(ranked.c[c.name] for c in _C)).where(ranked.c.rank == 1)
    found = [rows.to_job(row._mapping) for row in (await session.execute(query)).all()]
    return {(job.backend, job.model_key): job for job in found}


async def cancel(
    session: AsyncSession,
    job_id: str,
    *,
    reason: str = "cancelled by user",
    now: dt.datetime | None = None,
) -> rows.Change | None:
    """Cancel a queued or running job, durably. None when there is no such job.

    A running job's worker learns it on its next heartbeat (which returns False) and stops.
    Idempotent: cancelling a finished job changes nothing and returns it with ``event`` None.
    """
    now = now or rows.utcnow()
    where = sa.and_(_C.id == job_id, _C.state.in_(_ACTIVE))
    updated = await rows.update_returning(session, where, _cancelled(reason, now))
    if updated:
        return rows.change(updated[0], events.DownloadCancelled, now)
    job = await get(session, job_id)
    return None if job is None else rows.Change(job, None)


def _cancelled(reason: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "state": jobs.JobState.CANCELLED.value,
        "error": reason,
        "error_class": jobs.ErrorClass.CANCELLED.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }


async def retry(
    session: AsyncSession,
    job_id: str,
    *,
    max_attempts: int | None = None,
    now: dt.datetime | None = None,
) -> rows.Change | None:
    """Queue a failed or cancelled job again, due now, with its attempts reset (the same job:
    same id and declaration). None when there is no such job.

    Idempotent: an active job is returned unchanged (``event`` None), and so is the other job
    already active for the same backend and model (that one *is* the retry). Raises
    `QueueError` for a job that succeeded.
    """
    now = now or rows.utcnow()
    await rows.take_sqlite_write_lock(session)
    job = await get(session, job_id)
    if job is None or job.active:
        return None if job is None else rows.Change(job, None)
    if job.state is jobs.JobState.SUCCEEDED:
        raise QueueError(f"download {job_id} succeeded; there is nothing to retry")
    other = await _active(session, job.backend, job.model_key)
    if other is not None:
        return rows.Change(other, None)
    values = _requeued(job, max_attempts, now)
    if rows.is_sqlite(session):  # we hold the one write lock: no enqueue can race us
        updated = await rows.update_returning(session, _C.id == job_id, values)
        return rows.change(updated[0], events.DownloadQueued, now)
    try:
        async with session.begin_nested():  # a concurrent enqueue may win the index
            updated = await rows.update_returning(session, _C.id == job_id, values)
    except sa_exc.IntegrityError:
        other = await _active(session, job.backend, job.model_key)
        if other is None:
            raise
        return rows.Change(other, None)
    return rows.change(updated[0], events.DownloadQueued, now)


def _requeued(job: jobs.Job, max_attempts: int | None, now: dt.datetime) -> dict[str, Any]:
    return {
        "state": jobs.JobState.QUEUED.value,
        "attempts": 0,
        "max_attempts": job.max_attempts if max_attempts is None else max_attempts,
        "next_attempt_at": now,
        "error": None,
        "error_class": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": None,
        "updated_at": now,
    }

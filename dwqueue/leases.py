"""The worker's side of the queue: claim jobs under a lease, heartbeat, report progress, finish,
fail (with retry and backoff), release, and reap expired leases.

Called by the download cycle (`run_download_cycle`) and the lease reaper the scheduler runs.
Every function takes an ``AsyncSession`` and never commits; the caller commits, then publishes
the returned events. Every call after `claim` names the lease ``owner`` and does nothing (returns
None or False) once the job is no longer that owner's running job: cancelled, reaped, or
finished. Nothing here sleeps or reads the clock when ``now`` is given.

Attempts: `claim` counts an attempt. A transient failure is retried after `backoff.delay` until
the job's attempts run out; a permanent one (or insufficient disk) fails at once. A job's limit
is its own ``max_attempts`` (set by `queue.enqueue`) capped by the worker's `backoff.Policy`
``max_attempts`` when the worker gives one: the worker's configuration governs, a job may ask
for fewer. The capped limit is written back to the row, so events and listings show it. An
expired lease counts as a failed attempt: the reaper re-queues the job due at once (the worker
died, not the backend) or fails it when it has no attempts left, so a pull that kills its worker
cannot loop for ever. `release` (a clean shutdown) gives the attempt back.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import backoff, claims, events, jobs, rows

DEFAULT_LEASE = dt.timedelta(seconds=60)
_C = rows.COLUMNS
_RUNNING = jobs.JobState.RUNNING.value
_QUEUED = jobs.JobState.QUEUED.value


async def running_counts(session: AsyncSession) -> dict[str, int]:
    """How many jobs each backend is running now (backends with none are absent)."""
    query = sa.select(_C.backend, sa.func.count()).where(_C.state == _RUNNING).group_by(_C.backend)
    return {backend: count for backend, count in (await session.execute(query)).all()}


async def claim(
    session: AsyncSession,
    owner: str,
    *,
    limits: Mapping[str, int] | None = None,
    default_limit: int = 1,
    n: int = 1,
    lease: dt.timedelta = DEFAULT_LEASE,
    now: dt.datetime | None = None,
) -> list[rows.Change]:
    """Take up to ``n`` due jobs, oldest first, for ``owner`` until ``now + lease``.

    A backend runs at most ``limits.get(backend, default_limit)`` jobs at once, counting every
    worker's. Both dialects walk the queue the same way (`dwqueue.claims` says how). On Postgres
    the claim is one call of the ``dwqueue_claim`` function (revision 0008): candidates are
    locked with ``FOR UPDATE SKIP LOCKED`` (concurrent claimers pass over each other's) and each
    backend's count is read under a transaction advisory lock, so limits hold across replicas.
    On SQLite the claim first takes the one write lock. Either way no job is claimed twice, and
    the claim is part of the caller's transaction: nothing is leased until the caller commits,
    and the locks it took are held until then. Returns the claimed jobs with `DownloadStarted`
    events, oldest first; an empty list when nothing is due (or every due job's backend is
    full). Raises ValueError for a naive ``now``, and SQLAlchemy's ``DBAPIError`` on a database
    error.
    """
    return await _claim(session, owner, limits or {}, default_limit, n, lease, now, False)


async def claim_committed(
    session: AsyncSession,
    owner: str,
    *,
    limits: Mapping[str, int] | None = None,
    default_limit: int = 1,
    n: int = 1,
    lease: dt.timedelta = DEFAULT_LEASE,
    now: dt.datetime | None = None,
) -> list[rows.Change]:
    """`claim`, committed when it returns: the caller publishes the events at once.

    For a caller that claims in a transaction of its own, as the download cycle does. The
    session must have no transaction under way (ValueError otherwise). On Postgres the claim
    function then runs in autocommit mode, one round trip to the database instead of three
    (BEGIN, the claim, COMMIT): with many workers, round trips and their CPU are what bound the
    claim rate. On SQLite: `claim`, then commit. Either way a failed claim leases nothing.
    """
    if session.in_transaction():
        raise ValueError("claim_committed needs a session with no transaction under way")
    limits = limits or {}
    changes = await _claim(session, owner, limits, default_limit, n, lease, now, True)
    await session.commit()
    return changes


async def _claim(
    session: AsyncSession,
    owner: str,
    limits: Mapping[str, int],
    default_limit: int,
    n: int,
    lease: dt.timedelta,
    now: dt.datetime | None,
    own_transaction: bool,
) -> list[rows.Change]:
    now = now or rows.utcnow()
    if now.tzinfo is None:
        raise ValueError("claim needs a timezone-aware now")
    if rows.is_sqlite(session):
        claimed = await claims.sqlite(
            session, owner, lambda backend: limits.get(backend, default_limit), n, lease, now
        )
    else:
        claimed = await claims.postgres(
            session, owner, limits, default_limit, n, lease, now, own_transaction=own_transaction
        )
    changes = [rows.Change(job, events.of(events.DownloadStarted, job, now)) for job in claimed]
    return sorted(changes, key=lambda c: (c.job.next_attempt_at, c.job.id))


def _ours(job_id: str, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(_C.id == job_id, _C.lease_owner == owner, _C.state == _RUNNING)


async def heartbeat(
    session: AsyncSession,
    job_id: str,
    owner: str,
    *,
    lease: dt.timedelta = DEFAULT_LEASE,
    now: dt.datetime | None = None,
) -> bool:
    """Extend ``owner``'s lease to ``now + lease``. False when the job is no longer ours
    (cancelled, reaped, finished): the worker must stop pulling. Publishes nothing."""
    now = now or rows.utcnow()
    statement = (
        sa.update(rows.TABLE)
        .where(_ours(job_id, owner))
        .values(lease_expires_at=now + lease, updated_at=now)
        .returning(_C.id)
    )
    return (await session.execute(statement)).first() is not None


async def record_progress(
    session: AsyncSession,
    job_id: str,
    owner: str,
    progress: jobs.Progress,
    *,
    lease: dt.timedelta = DEFAULT_LEASE,
    now: dt.datetime | None = None,
) -> rows.Change | None:
    """Store the latest progress and extend the lease (a heartbeat too), returning a
    `DownloadProgressed` event; None when the job is no longer ours.

    Call it at the rate `dwqueue.coalescer.Coalescer` admits, not for every line Ollama sends.
    """
    now = now or rows.utcnow()
    values = {
        "status": progress.status,
        "digest": progress.digest,
        "completed": progress.completed,
        "total": progress.total,
        "rate_bps": progress.rate_bps,
        "eta_s": progress.eta_s,
        "lease_expires_at": now + lease,
        "updated_at": now,
    }
    updated = await rows.update_returning(session, _ours(job_id, owner), values)
    return rows.change(updated[0], events.DownloadProgressed, now) if updated else None


async def succeed(
    session: AsyncSession, job_id: str, owner: str, *, now: dt.datetime | None = None
) -> rows.Change | None:
    """Mark ``owner``'s job succeeded (a `DownloadSucceeded` event); None if no longer ours."""
    now = now or rows.utcnow()
    values = {**_finished(jobs.JobState.SUCCEEDED, now), "error": None, "error_class": None}
    updated = await rows.update_returning(session, _ours(job_id, owner), values)
    return rows.change(updated[0], events.DownloadSucceeded, now) if updated else None


async def fail(
    session: AsyncSession,
    job_id: str,
    owner: str,
    *,
    error: str,
    error_class: jobs.ErrorClass,
    policy: backoff.Policy | None = None,
    draw: float | None = None,
    now: dt.datetime | None = None,
) -> rows.Change | None:
    """Record a failed attempt of ``owner``'s job; None if it is no longer ours.

    A retryable class with attempts left re-queues the job due after `backoff.delay(policy,
    attempts, draw)` (a `DownloadRetrying` event); anything else fails it for good (a
    `DownloadFailed` event) until a user retries or the declaration changes. Attempts left are
    counted against the job's ``max_attempts`` capped by ``policy.max_attempts`` (when a policy
    is given; the cap is stored in the row). ``draw`` is the jitter's random number in [0, 1);
    a fresh one when None.
    """
    now = now or rows.utcnow()
    row = await rows.fetch(session, job_id)
    if row is None or row["lease_owner"] != owner or row["state"] != _RUNNING:
        return None
    limit = row["max_attempts"] if policy is None else min(row["max_attempts"], policy.max_attempts)
    policy = policy or backoff.Policy()
    values: dict[str, Any] = {
        "error": error,
        "error_class": error_class.value,
        "max_attempts": limit,
    }
    cls: type[events.DownloadEvent]
    if error_class.retryable and backoff.should_retry(row["attempts"], limit):
        draw = random.random() if draw is None else draw  # noqa: S311 - jitter, not crypto
        wait = backoff.delay(policy, row["attempts"], draw)
        values |= _requeue(now + dt.timedelta(seconds=wait), now)
        cls = events.DownloadRetrying
    else:
        values |= _finished(jobs.JobState.FAILED, now)
        cls = events.DownloadFailed
    updated = await rows.update_returning(session, _ours(job_id, owner), values)
    return rows.change(updated[0], cls, now) if updated else None


async def release(
    session: AsyncSession, job_id: str, owner: str, *, now: dt.datetime | None = None
) -> rows.Change | None:
    """Give ``owner``'s running job back to the queue, due now, without counting the attempt
    (a clean shutdown); a `DownloadQueued` event. None if no longer ours."""
    now = now or rows.utcnow()
    values = {**_requeue(now, now), "attempts": _C.attempts - 1}
    updated = await rows.update_returning(session, _ours(job_id, owner), values)
    return rows.change(updated[0], events.DownloadQueued, now) if updated else None


async def renew(
    session: AsyncSession,
    owner: str,
    job_ids: Collection[str],
    *,
    lease: dt.timedelta = DEFAULT_LEASE,
    now: dt.datetime | None = None,
) -> frozenset[str]:
    """Extend ``owner``'s leases of ``job_ids`` to ``now + lease``, expired or not, in one
    statement: what a worker does before reaping, so that after a database outage longer than
    the lease it keeps the jobs it is still running. Jobs that are no longer ``owner``'s
    running ones are left alone. Returns the ids renewed. Publishes nothing."""
    if not job_ids:
        return frozenset()
    now = now or rows.utcnow()
    ours = sa.and_(_C.id.in_(list(job_ids)), _C.lease_owner == owner, _C.state == _RUNNING)
    statement = (
        sa.update(rows.TABLE)
        .where(ours)
        .values(lease_expires_at=now + lease, updated_at=now)
        .returning(_C.id)
        .execution_options(synchronize_session=False)
    )
    return frozenset(job_id for (job_id,) in (await session.execute(statement)).all())


async def reap(
    session: AsyncSession,
    *,
    max_attempts: int | None = None,
    now: dt.datetime | None = None,
    owner: str | None = None,
    live: Collection[str] = (),
) -> list[rows.Change]:
    """Take back every running job whose lease expired before ``now``, except ``owner``'s jobs
    whose ids are in ``live`` (the caller is still running them: a pull, or the write of its end
    that a database outage held up).

    Each one with attempts left is queued again, due now (a `DownloadRetrying` event, error
    class ``lease_expired``); one that used its last attempt fails (`DownloadFailed`). Attempts
    left are counted as `fail` counts them: ``max_attempts`` (the worker policy's) caps each
    job's own limit, and the cap is stored. Progress is kept. Safe to run in several replicas at
    once: each job is reaped once.
    """
    now = now or rows.utcnow()
    expired = sa.and_(_C.state == _RUNNING, _C.lease_expires_at < now)
    if owner is not None and live:
        expired = sa.and_(expired, sa.not_(sa.and_(_C.lease_owner == owner, _C.id.in_(list(live)))))
    error: dict[str, Any] = {"error": "the worker's lease expired", "error_class": "lease_expired"}
    has_attempts_left = _C.attempts < _C.max_attempts
    if max_attempts is not None:
        capped = sa.case((_C.max_attempts > max_attempts, max_attempts), else_=_C.max_attempts)
        error["max_attempts"] = capped
        has_attempts_left = sa.and_(has_attempts_left, _C.attempts < max_attempts)
    requeued = await rows.update_returning(
        session,
        sa.and_(expired, has_attempts_left),
        {**_requeue(now, now), **error},
    )
    failed = await rows.update_returning(
        session, expired, {**_finished(jobs.JobState.FAILED, now), **error}
    )
    changes = [rows.change(row, events.DownloadRetrying, now) for row in requeued]
    changes += [rows.change(row, events.DownloadFailed, now) for row in failed]
    return sorted(changes, key=lambda c: c.job.id)


def _requeue(due: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    return {
        "state": _QUEUED,
        "next_attempt_at": due,
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }


def _finished(state: jobs.JobState, now: dt.datetime) -> dict[str, Any]:
    return {
        "state": state.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }

"""The worker's side of the queue: claim jobs under a lease, heartbeat, report progress, finish,
fail (with retry and backoff), release, and reap expired leases.

Called by the download cycle (`run_download_cycle`) and the lease reaper the scheduler runs.
Every function takes an ``AsyncSession`` and never commits; the caller commits, then publishes
the returned events. Every call after `claim` names the lease ``owner`` and does nothing (returns
None or False) once the job is no longer that owner's running job: cancelled, reaped, or
finished. Nothing here sleeps or reads the clock when ``now`` is given.

Attempts: `claim` counts an attempt. A transient failure is retried after `backoff.delay` until
the job's ``max_attempts``; a permanent one (or insufficient disk) fails at once. An expired
lease counts as a failed attempt: the reaper re-queues the job due at once (the worker died, not
the backend) or fails it when it has no attempts left, so a pull that kills its worker cannot
loop for ever. `release` (a clean shutdown) gives the attempt back.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import backoff, events, jobs, rows

DEFAULT_LEASE = dt.timedelta(seconds=60)
_C = rows.COLUMNS
_RUNNING = jobs.JobState.RUNNING.value
_QUEUED = jobs.JobState.QUEUED.value
# Namespace of the per-backend advisory locks that make running counts exact on Postgres.
_LOCK_NAMESPACE = 0x6C6C_6D63  # "llmc"
_WAIT_FOR_LOCK = sa.text(
    "SELECT true FROM (SELECT pg_advisory_xact_lock(:namespace, hashtext(:backend))) AS locked"
)
_TRY_LOCK = sa.text("SELECT pg_try_advisory_xact_lock(:namespace, hashtext(:backend))")


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
    worker's. On Postgres, candidates are locked with ``FOR UPDATE SKIP LOCKED`` (concurrent
    claimers pass over each other's) and each backend's count is re-read under a transaction
    advisory lock, so limits hold across replicas; on SQLite the claim first takes the one write
    lock. Either way no job is claimed twice. Returns the claimed jobs with `DownloadStarted`
    events, oldest first; an empty list when nothing is due.
    """
    now = now or rows.utcnow()
    limits = limits or {}
    await rows.take_sqlite_write_lock(session)
    # On SQLite (write lock held) a snapshot of every backend's count is exact; on Postgres
    # counts are read per candidate backend under its advisory lock.
    snapshot = await running_counts(session) if rows.is_sqlite(session) else {}
    picker = _Picker(n, lambda backend: limits.get(backend, default_limit), snapshot)
    for _ in range(_ROUNDS):
        candidates = await _candidates(session, sorted(picker.skip), n, now)
        for job_id, backend in candidates:
            if picker.done:
                break
            await picker.consider(session, job_id, backend)
        if picker.done or len(candidates) < _window(n):
            break
    picked = picker.picked
    if not picked:
        return []
    # The state guard makes a claim on SQLite (no row locks) harmless even when misused.
    where = sa.and_(_C.id.in_(picked), _C.state == _QUEUED)
    claimed = await rows.update_returning(session, where, _started(owner, lease, now))
    changes = [rows.change(row, events.DownloadStarted, now) for row in claimed]
    return sorted(changes, key=lambda c: (c.job.next_attempt_at, c.job.id))


_ROUNDS = 3  # candidate windows per claim, when the first ones are all of full backends


def _window(n: int) -> int:
    return max(2 * n, n + 8)  # a few spare rows in case some backends are full


class _Picker:
    """Chooses claimable jobs among candidates, oldest first, within each backend's limit."""

    def __init__(self, n: int, limit_of: Callable[[str], int], snapshot: Mapping[str, int]):
        self.n, self.limit_of, self.snapshot = n, limit_of, snapshot
        self.picked: list[str] = []
        self.exact: dict[str, int] = {}  # running counts no other claim can change before commit
        self.skip = {b for b, count in snapshot.items() if count >= limit_of(b)}

    @property
    def done(self) -> bool:
        return len(self.picked) == self.n

    async def consider(self, session: AsyncSession, job_id: str, backend: str) -> None:
        if backend in self.skip or job_id in self.picked:
            return
        if backend not in self.exact:
            count = await _exact_count(session, backend, self.snapshot, wait=not self.exact)
            if count is None:  # another claimer holds this backend; leave its jobs to it
                self.skip.add(backend)
                return
            self.exact[backend] = count
        if self.exact[backend] < self.limit_of(backend):
            self.exact[backend] += 1
            self.picked.append(job_id)
        else:
            self.skip.add(backend)


async def _candidates(
    session: AsyncSession, skip: list[str], n: int, now: dt.datetime
) -> list[tuple[str, str]]:
    query = (
        sa.select(_C.id, _C.backend)
        .where(_C.state == _QUEUED, _C.next_attempt_at <= now)
        .order_by(_C.next_attempt_at, _C.id)
        .limit(_window(n))
    )
    if skip:
        query = query.where(_C.backend.not_in(skip))
    if not rows.is_sqlite(session):
        query = query.with_for_update(skip_locked=True)
    return [(job_id, backend) for job_id, backend in (await session.execute(query)).all()]


async def _exact_count(
    session: AsyncSession, backend: str, snapshot: Mapping[str, int], *, wait: bool
) -> int | None:
    """The backend's running count, exact until commit. On SQLite the write lock already
    makes ``snapshot`` exact. On Postgres, read it again holding the backend's transaction
    advisory lock, so two claimers cannot both fill its last slot. Only a claim's first lock
    waits (later ones are tried, None when taken), so claimers never wait in a cycle."""
    if rows.is_sqlite(session):
        return snapshot.get(backend, 0)
    lock = _WAIT_FOR_LOCK if wait else _TRY_LOCK
    params = {"namespace": _LOCK_NAMESPACE, "backend": backend}
    if not (await session.execute(lock, params)).scalar_one():
        return None
    query = sa.select(sa.func.count()).where(_C.state == _RUNNING, _C.backend == backend)
    return int((await session.execute(query)).scalar_one())


def _started(owner: str, lease: dt.timedelta, now: dt.datetime) -> dict[str, Any]:
    return {
        "state": _RUNNING,
        "attempts": _C.attempts + 1,
        "lease_owner": owner,
        "lease_expires_at": now + lease,
        "error": None,
        "error_class": None,
        "started_at": now,
        "updated_at": now,
    }


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
    `DownloadFailed` event) until a user retries or the declaration changes. ``draw`` is the
    jitter's random number in [0, 1); a fresh one when None.
    """
    now = now or rows.utcnow()
    policy = policy or backoff.Policy()
    row = await rows.fetch(session, job_id)
    if row is None or row["lease_owner"] != owner or row["state"] != _RUNNING:
        return None
    values: dict[str, Any] = {"error": error, "error_class": error_class.value}
    cls: type[events.DownloadEvent]
    if error_class.retryable and backoff.should_retry(row["attempts"], row["max_attempts"]):
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


async def reap(session: AsyncSession, *, now: dt.datetime | None = None) -> list[rows.Change]:
    """Take back every running job whose lease expired before ``now``.

    Each one with attempts left is queued again, due now (a `DownloadRetrying` event, error
    class ``lease_expired``); one that used its last attempt fails (`DownloadFailed`). Progress
    is kept. Safe to run in several replicas at once: each job is reaped once.
    """
    now = now or rows.utcnow()
    expired = sa.and_(_C.state == _RUNNING, _C.lease_expires_at < now)
    error = {"error": "the worker's lease expired", "error_class": "lease_expired"}
    requeued = await rows.update_returning(
        session,
        sa.and_(expired, _C.attempts < _C.max_attempts),
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

"""How `dwqueue.leases.claim` picks and leases due jobs, one path per dialect.

Called only by `dwqueue.leases.claim`, which builds the `Change` values and events from the jobs
returned here. Every function runs inside the caller's transaction and never commits.

Postgres claims in one call of ``dwqueue_claim`` (a plpgsql function that migration 0004
creates and 0007 replaces; the database must be migrated to head). The function walks due jobs
oldest first through a cursor that locks each row it hands out with ``FOR UPDATE SKIP LOCKED``
(concurrent claimers pass over each other's rows, and rows are locked one at a time, as they are
reached).
A job whose backend is at its limit, or whose backend's transaction advisory lock
(``pg_try_advisory_xact_lock``) another claimer holds, is passed over; any other is leased by an
``UPDATE`` that counts the backend's running jobs in its own WHERE clause. It stops at ``n``
leased jobs or after ``3 * max(2n, n + 8)`` rows, so it locks a bounded number of rows; when
that window was spent on backends it found full, it walks again without their jobs (at most
once per backend found full), so jobs queued behind many of a full backend's still get a turn.

Why the limits are exact: the function is VOLATILE, so in READ COMMITTED each of its statements
takes a fresh snapshot. The leasing ``UPDATE`` starts after the backend's advisory lock is ours,
so its count sees every claim committed before that (a claimer releases the lock only by
committing) and, being in our transaction, the jobs we leased a moment ago; no other claimer can
add to the backend until we commit. Exceeding a limit would need two claimers holding one
backend's lock at once, which Postgres forbids. (The same trick in one plain SQL statement would
count in a snapshot taken before the lock, and miss a claim committed in between.)

A claim that keeps nothing because every due job's backend was locked by another claimer waits
once for the lock of the oldest due job's backend (claims always have), then walks the queue
again, so on a busy single-backend queue a claimer is not turned away while another one commits.
It waits only while holding no advisory lock, so two claimers never wait for each other. The
lock key (``hashtext`` of the backend in namespace 0x6C6C6D63, "llmc") is the one older versions
used, so mixed replicas still exclude each other.

The claim is one statement, so one round trip (plus the BEGIN psycopg sends first when the
caller's transaction has not started, and the caller's COMMIT; `dwqueue.leases.claim_committed`
runs it in autocommit mode, a transaction of its own, and saves both). It is sent through the
session's own psycopg connection rather than SQLAlchemy's execute: SQLAlchemy's statement and
result layer (cursor description, result metadata and row processors for 24 columns) cost about
a quarter of a worker's CPU per claim, and workers' CPU is what bounds the claim rate when they
share cores with Postgres (``benchmarks/download_queue.py claims``). It is still the caller's
transaction (or its own); driver errors come out as SQLAlchemy's ``DBAPIError`` subclasses, like
those of any other statement, and a connection the error broke is invalidated. SQLAlchemy's
statement events and echo do not see this one statement.

SQLite has one writer: the claim takes the write lock first, after which a snapshot of the
running counts is exact and jobs are picked in Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import jobs, rows

LimitOf = Callable[[str], int]

_C = rows.COLUMNS
_RUNNING = jobs.JobState.RUNNING.value
_QUEUED = jobs.JobState.QUEUED.value
_ROUNDS = 3  # SQLite: pick rounds per claim, when the first picks are all of full backends
# Arguments: owner, n, now, lease expiry, backends with their own limit, those limits, and the
# limit of every other backend. The casts pick the function's signature whatever types the
# driver chose for the values.
_CLAIM_SQL = (
    f"SELECT {', '.join(rows.FIELDS)} FROM dwqueue_claim("  # noqa: S608 - constant names only
    "%s, %s::integer, %s::timestamptz, %s::timestamptz, %s::text[], %s::integer[], %s::integer)"
)


async def postgres(
    session: AsyncSession,
    owner: str,
    limits: Mapping[str, int],
    default_limit: int,
    n: int,
    lease: dt.timedelta,
    now: dt.datetime,
    *,
    own_transaction: bool = False,
) -> list[jobs.Job]:
    """Lease up to ``n`` due jobs to ``owner`` (see the module docstring), oldest first.

    With ``own_transaction`` the session's transaction must not have begun: its connection is
    taken in autocommit mode, so the call is a transaction of its own, committed when it
    returns, and the claim costs one round trip instead of three (BEGIN, the call, COMMIT).

    Raises ``sqlalchemy.exc.DBAPIError`` (``OperationalError`` and the rest) on a database
    error, e.g. ``ProgrammingError`` when the database is not migrated to revision 0004."""
    if n < 1:
        return []
    options = {"isolation_level": "AUTOCOMMIT"} if own_transaction else None
    conn = await session.connection(execution_options=options)
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError(f"the Postgres claim needs psycopg 3, not {type(driver).__name__}")
    params = (owner, n, now, now + lease, list(limits), list(limits.values()), default_limit)
    try:
        cursor = await driver.execute(_CLAIM_SQL, params)
        found = await cursor.fetchall()
    except psycopg.Error as exc:
        if driver.broken:
            await conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            _CLAIM_SQL, params, exc, psycopg.Error, connection_invalidated=driver.broken
        ) from exc
    return [rows.job_from_values(values) for values in found]


def _window(n: int) -> int:
    return max(2 * n, n + 8)  # rows a SQLite pick reads: a few spare in case backends are full


async def sqlite(
    session: AsyncSession,
    owner: str,
    limit_of: LimitOf,
    n: int,
    lease: dt.timedelta,
    now: dt.datetime,
) -> list[jobs.Job]:
    """Lease up to ``n`` due jobs to ``owner`` holding SQLite's one write lock (taken here)."""
    await rows.take_sqlite_write_lock(session)
    query = sa.select(_C.backend, sa.func.count()).where(_C.state == _RUNNING).group_by(_C.backend)
    running = {backend: count for backend, count in await session.execute(query)}
    full = {backend for backend, count in running.items() if count >= limit_of(backend)}
    picked: list[str] = []
    for _ in range(_ROUNDS):
        due = (
            sa.select(_C.id, _C.backend)
            .where(_C.state == _QUEUED, _C.next_attempt_at <= now)
            .where(_C.backend.not_in(full), _C.id.not_in(picked))
            .order_by(_C.next_attempt_at, _C.id)
            .limit(_window(n))
        )
        candidates = [(job_id, backend) for job_id, backend in await session.execute(due)]
        for job_id, backend in candidates:
            if len(picked) == n:
                break
            if backend in full:
                continue
            if running.get(backend, 0) >= limit_of(backend):  # a limit of 0: never
                full.add(backend)
                continue
            picked.append(job_id)
            running[backend] = running.get(backend, 0) + 1
            if running[backend] >= limit_of(backend):
                full.add(backend)
        if len(picked) == n or len(candidates) < _window(n):
            break
    if not picked:
        return []
    where = sa.and_(_C.id.in_(picked), _C.state == _QUEUED)
    leased = await rows.update_returning(session, where, _started(owner, lease, now))
    return [rows.to_job(row) for row in leased]


def _started(owner: str, lease: dt.timedelta, now: dt.datetime) -> dict[str, object]:
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

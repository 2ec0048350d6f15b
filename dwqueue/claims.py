"""How `dwqueue.leases.claim` picks and leases due jobs: one algorithm, two dialects.

Called only by `dwqueue.leases.claim`, which builds the `Change` values and events from the jobs
returned here. Every function runs inside the caller's transaction and never commits.

The algorithm. Walk the due jobs oldest first (``next_attempt_at``, then id) in passes of at
most `window` rows. Lease each job whose backend is below its limit, counting the jobs it runs
and those leased by this claim; a job whose backend is at its limit marks that backend full,
and the rest of its jobs are passed over. Stop at ``n`` leased jobs. Otherwise, when a pass
read a whole window and found a backend full, walk again without the full backends' jobs (at
most once per backend found full), so jobs queued behind many of a full backend's get a turn;
else stop. Postgres runs it as the plpgsql function ``dwqueue_claim`` (`function_text` of
version `FUNCTION_VERSION`, created by the migration that loads that file: the database must be
migrated to head), SQLite in Python (`sqlite`); one table of cases holds both to the same
answers (tests/integration/test_queue_claim_cases.py).

Postgres adds what concurrent claimers need. The walk is a cursor that locks each row it hands
out with ``FOR UPDATE SKIP LOCKED`` (claimers pass over each other's rows, one row at a time). A
job whose backend's transaction advisory lock (``pg_try_advisory_xact_lock``) another claimer
holds is passed over; any other is leased by an ``UPDATE`` that counts the backend's running
jobs in its own WHERE clause. The limits are exact: the function is VOLATILE, so in READ
COMMITTED each statement takes a fresh snapshot; the leasing ``UPDATE`` starts after the
backend's advisory lock is ours, so its count sees every claim committed before (a claimer
releases the lock only by committing) and our own; no other claimer can add to the backend
until we commit. A claim that kept nothing because every due job's backend was locked by
another claimer waits once for the lock of the oldest due job's backend (holding no advisory
lock of its own, so two claimers never wait for each other), then walks again. The lock key
(``hashtext`` of the backend in namespace 0x6C6C6D63, "llmc") is the one older versions used,
so mixed replicas still exclude each other.

The claim is one statement, so one round trip (plus the BEGIN psycopg sends first when the
caller's transaction has not started, and the caller's COMMIT; `dwqueue.leases.claim_committed`
runs it in autocommit mode, a transaction of its own, and saves both). It is sent through the
session's own psycopg connection rather than SQLAlchemy's execute, whose statement and result
layer costs about a quarter of a worker's CPU per claim (README, performance). It is still the
caller's transaction (or its own); driver errors come out as SQLAlchemy's ``DBAPIError``
subclasses, and a connection the error broke is invalidated. SQLAlchemy's statement events and
echo do not see this one statement.

SQLite has one writer: the claim takes the write lock first, after which a snapshot of the
running counts is exact, and the walk needs no row or advisory locks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from importlib import resources

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import jobs, rows

LimitOf = Callable[[str], int]

FUNCTION_VERSION = 3  # the dwqueue/sql/claim_v<N>.sql this code calls (migration 0008 loads it)
_C = rows.COLUMNS
_RUNNING = jobs.JobState.RUNNING.value
_QUEUED = jobs.JobState.QUEUED.value
# Arguments: owner, n, now, lease expiry, backends with their own limit, those limits, the
# limit of every other backend, and the window. The casts pick the function's signature
# whatever types the driver chose for the values (version 2 takes the first seven).
_CLAIM_SQL = (
    f"SELECT {', '.join(rows.FIELDS)} FROM dwqueue_claim("  # noqa: S608 - constant names only
    "%s, %s::integer, %s::timestamptz, %s::timestamptz, %s::text[], %s::integer[], %s::integer,"
    " %s::integer)"
)


def window(n: int) -> int:
    """Rows one pass of a claim of ``n`` reads: enough spare to pass over a few full backends,
    bounded so that a pass locks (on Postgres) a bounded number of rows. Both dialects use it."""
    return 3 * max(2 * n, n + 8)


def function_text(version: int) -> str:
    """The SQL that creates version ``version`` of ``dwqueue_claim`` (dwqueue/sql), as the
    migration of that version runs it. Released versions are frozen: a change is a new file."""
    sql = resources.files("dwqueue").joinpath("sql", f"claim_v{version}.sql")
    return sql.read_text(encoding="utf-8")


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
    error, e.g. ``ProgrammingError`` when the database is not migrated to revision 0008."""
    if n < 1:
        return []
    options = {"isolation_level": "AUTOCOMMIT"} if own_transaction else None
    conn = await session.connection(execution_options=options)
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError(f"the Postgres claim needs psycopg 3, not {type(driver).__name__}")
    expires = now + lease
    params = (owner, n, now, expires, list(limits), list(limits.values()), default_limit, window(n))
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


async def sqlite(
    session: AsyncSession,
    owner: str,
    limit_of: LimitOf,
    n: int,
    lease: dt.timedelta,
    now: dt.datetime,
) -> list[jobs.Job]:
    """Lease up to ``n`` due jobs to ``owner`` holding SQLite's one write lock (taken here),
    walking as ``dwqueue_claim`` does (the module docstring)."""
    if n < 1:
        return []
    await rows.take_sqlite_write_lock(session)
    query = sa.select(_C.backend, sa.func.count()).where(_C.state == _RUNNING).group_by(_C.backend)
    running = {backend: count for backend, count in await session.execute(query)}
    full: set[str] = set()
    picked: list[str] = []
    while True:
        seen, grew = await _pass(session, now, n, limit_of, running, full, picked)
        if len(picked) == n or not (grew and seen == window(n)):
            break
    if not picked:
        return []
    where = sa.and_(_C.id.in_(picked), _C.state == _QUEUED)
    leased = await rows.update_returning(session, where, _started(owner, lease, now))
    return [rows.to_job(row) for row in leased]


async def _pass(
    session: AsyncSession,
    now: dt.datetime,
    n: int,
    limit_of: LimitOf,
    running: dict[str, int],
    full: set[str],
    picked: list[str],
) -> tuple[int, bool]:
    """One pass of the walk: picks into ``picked`` (counting into ``running``), marks backends
    at their limit in ``full``; returns the rows read and whether ``full`` grew."""
    due = (
        sa.select(_C.id, _C.backend)
        .where(_C.state == _QUEUED, _C.next_attempt_at <= now)
        .where(_C.backend.not_in(full), _C.id.not_in(picked))
        .order_by(_C.next_attempt_at, _C.id)
        .limit(window(n))
    )
    seen, grew = 0, False
    for job_id, backend in (await session.execute(due)).all():
        seen += 1
        if backend in full:
            continue
        if running.get(backend, 0) >= limit_of(backend):
            full.add(backend)
            grew = True
            continue
        picked.append(job_id)
        running[backend] = running.get(backend, 0) + 1
        if len(picked) == n:
            break
    return seen, grew


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

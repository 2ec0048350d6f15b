"""How `dwqueue.leases.claim` picks and leases due jobs, one path per dialect.

Called only by `dwqueue.leases.claim`, which builds the `Change` values and events from the rows
returned here. Every function runs inside the caller's transaction and never commits.

Postgres claims in two statements, whatever ``n``:

1. *pick*: walk due jobs oldest first, lock each with ``FOR UPDATE SKIP LOCKED`` (concurrent
   claimers pass over each other's) and keep it only when its backend's transaction advisory lock
   is ours (``pg_try_advisory_xact_lock``), stopping at ``n``. Postgres evaluates this lazily, so
   a claim locks only the rows and backends it keeps (plus any it had to pass over).
2. *lease*: in one ``UPDATE ... RETURNING``, lease the picked jobs each backend still has room
   for, counting its running jobs in this statement's snapshot.

Why two and not one: in READ COMMITTED a statement reads the snapshot taken when it began. A
count made in the statement that takes the advisory lock could miss a claim another worker
committed (releasing that lock) after the snapshot but before our lock; the second statement's
snapshot is taken with the lock held, so its count is exact until we commit. Exceeding a limit
therefore needs two claimers to hold one backend's lock at once, which Postgres forbids.

A claim that keeps nothing because every due job's backend was locked by another claimer waits
once for the lock of the oldest due job's backend (claims always have), so on a busy
single-backend queue a claimer is not turned away while another one commits. It waits only
while holding no advisory lock, so two claimers never wait for each other. The lock key
(``hashtext`` of the backend in ``_LOCK_NAMESPACE``) is the one older versions used, so mixed
replicas still exclude each other.

SQLite has one writer: the claim takes the write lock first, after which a snapshot of the
running counts is exact and jobs are picked in Python.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dwqueue import jobs, rows, schema

LimitOf = Callable[[str], int]

_C = rows.COLUMNS
_RUNNING = jobs.JobState.RUNNING.value
_QUEUED = jobs.JobState.QUEUED.value
# Namespace of the per-backend advisory locks that make running counts exact on Postgres.
_LOCK_NAMESPACE = 0x6C6C_6D63  # "llmc"
_ROUNDS = 3  # pick rounds per claim, when the first picks are all of full backends
_TEXTS = sa.ARRAY(sa.String)

# psycopg prepares a statement after a few runs of the same text. Postgres then re-plans it on
# every run unless its generic plan looks as cheap as the custom ones, and a generic plan guesses
# badly at a bound LIMIT or array length (10% of the table, 100 elements). So the sizes are
# literals: one text per ``n`` (pick) and per number of picked jobs (lease), each built once.
# Only integers computed here are formatted into them; every value is bound.
_PICK_SQL = """
    SELECT c.id, c.backend
    FROM (
        SELECT id, backend FROM download_jobs
        WHERE state = 'queued' AND next_attempt_at <= :now AND backend <> ALL(:skip)
        ORDER BY next_attempt_at, id
        LIMIT {window}
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE pg_try_advisory_xact_lock({namespace}, hashtext(c.backend))
    LIMIT {n}
"""
# Lock the oldest due job nobody holds, then wait for its backend's lock.
_WAIT_SQL = """
    SELECT c.backend
    FROM (
        SELECT id, backend FROM download_jobs
        WHERE state = 'queued' AND next_attempt_at <= :now
        ORDER BY next_attempt_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) AS c
    CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock({namespace}, hashtext(c.backend))) AS w
"""
# A picked job is leased when its backend runs fewer than ``lim - nth + 1`` jobs, ``nth`` being
# its rank among the jobs picked for that backend (the count cannot see this statement's own
# updates, hence the rank).
_LEASE_SQL = """
    UPDATE download_jobs AS j SET
        state = 'running', attempts = j.attempts + 1, lease_owner = :owner,
        lease_expires_at = :expires, error = NULL, error_class = NULL,
        started_at = :now, updated_at = :now, seq = j.seq + 1
    FROM (VALUES {values}) AS p(id, nth, lim)
    WHERE j.id = p.id AND j.state = 'queued' AND p.nth + (
        SELECT count(*) FROM download_jobs AS r
        WHERE r.state = 'running' AND r.backend = j.backend
    ) <= p.lim
    RETURNING j.id, j.backend, j.model, j.model_key, j.declaration, j.state, j.attempts,
        j.max_attempts, j.next_attempt_at, j.lease_owner, j.lease_expires_at, j.status, j.digest,
        j.completed, j.total, j.rate_bps, j.eta_s, j.error, j.error_class, j.seq, j.created_at,
        j.updated_at, j.started_at, j.finished_at
"""
_NOW = sa.bindparam("now", type_=schema.UtcDateTime())


@functools.cache
def _pick_statement(n: int) -> sa.TextClause:
    sql = _PICK_SQL.format(window=_window(n), namespace=_LOCK_NAMESPACE, n=n)
    return sa.text(sql).bindparams(_NOW, sa.bindparam("skip", type_=_TEXTS))


@functools.cache
def _wait_statement() -> sa.TextClause:
    return sa.text(_WAIT_SQL.format(namespace=_LOCK_NAMESPACE)).bindparams(_NOW)


@functools.cache
def _lease_statement(count: int) -> sa.TextualSelect:
    values = ", ".join(
        f"(CAST(:id_{i} AS varchar), CAST(:nth_{i} AS int), CAST(:lim_{i} AS int))"
        for i in range(count)
    )
    expires = sa.bindparam("expires", type_=schema.UtcDateTime())
    return sa.text(_LEASE_SQL.format(values=values)).bindparams(_NOW, expires).columns(*_C)


async def postgres(
    session: AsyncSession,
    owner: str,
    limit_of: LimitOf,
    n: int,
    lease: dt.timedelta,
    now: dt.datetime,
) -> list[sa.RowMapping]:
    """Lease up to ``n`` due jobs to ``owner`` (see the module docstring); the leased rows."""
    if n < 1:
        return []
    conn = await session.connection()
    full: list[str] = []  # backends found at their limit, exactly (we hold their locks)
    leased: list[sa.RowMapping] = []
    for round_ in range(_ROUNDS):
        picked = await _pick(conn, full, n - len(leased), now)
        if not picked and round_ == 0 and await _wait(conn, now):
            picked = await _pick(conn, full, n, now)
        if not picked:
            break
        got = await _lease(conn, owner, picked, limit_of, lease, now)
        leased += got
        if len(got) == len(picked) or len(leased) == n:
            break
        ids = {row["id"] for row in got}
        full += sorted({backend for job_id, backend in picked if job_id not in ids})
    return leased


async def _pick(
    conn: AsyncConnection, skip: Sequence[str], n: int, now: dt.datetime
) -> list[tuple[str, str]]:
    """Lock up to ``n`` due jobs, oldest first (the subquery's order: nothing above it sorts),
    each with its backend's advisory lock."""
    result = await conn.execute(_pick_statement(n), {"now": now, "skip": list(skip)})
    return [(job_id, backend) for job_id, backend in result]


async def _wait(conn: AsyncConnection, now: dt.datetime) -> bool:
    """Every due job's backend was another claimer's (or nothing is due): wait for the lock of
    the oldest due job's backend; False when nothing is due. Called only while we hold no
    advisory lock, so no two claimers wait for each other."""
    return (await conn.execute(_wait_statement(), {"now": now})).first() is not None


async def _lease(
    conn: AsyncConnection,
    owner: str,
    picked: Sequence[tuple[str, str]],
    limit_of: LimitOf,
    lease: dt.timedelta,
    now: dt.datetime,
) -> list[sa.RowMapping]:
    params: dict[str, object] = {"owner": owner, "expires": now + lease, "now": now}
    ranks: dict[str, int] = {}
    for i, (job_id, backend) in enumerate(picked):
        ranks[backend] = ranks.get(backend, 0) + 1
        params |= {f"id_{i}": job_id, f"nth_{i}": ranks[backend], f"lim_{i}": limit_of(backend)}
    result = await conn.execute(_lease_statement(len(picked)), params)
    return [row._mapping for row in result]


def _window(n: int) -> int:
    return max(2 * n, n + 8)  # rows a pick may lock: a few spare in case backends are taken


async def sqlite(
    session: AsyncSession,
    owner: str,
    limit_of: LimitOf,
    n: int,
    lease: dt.timedelta,
    now: dt.datetime,
) -> list[sa.RowMapping]:
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
            picked.append(job_id)
            running[backend] = running.get(backend, 0) + 1
            if running[backend] >= limit_of(backend):
                full.add(backend)
        if len(picked) == n or len(candidates) < _window(n):
            break
    if not picked:
        return []
    where = sa.and_(_C.id.in_(picked), _C.state == _QUEUED)
    return await rows.update_returning(session, where, _started(owner, lease, now))


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

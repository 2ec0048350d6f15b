"""Claims on both databases, and what is particular to the Postgres claim function (0004)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

import migrations
from dwqueue import jobs, leases, queue
from runtimestate import database

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


async def test_a_claimed_job_is_the_job_as_stored(session: AsyncSession) -> None:
    queued = await queue.enqueue(session, "gpu-1", "llama3", now=T0)
    await session.commit()
    [claimed] = await leases.claim(session, "w1", lease=dt.timedelta(seconds=30), now=at(5))
    await session.commit()
    assert claimed.job == await queue.get(session, queued.job.id)
    assert claimed.job.created_at == T0
    assert claimed.job.lease_expires_at == at(35)


async def test_a_claim_passes_over_the_jobs_of_a_full_backend_to_reach_another(
    session: AsyncSession,
) -> None:
    for i in range(12):
        await queue.enqueue(session, "busy", f"model-{i}", now=at(i))
    other = await queue.enqueue(session, "idle", "llama3", now=at(20))
    await session.commit()
    [first] = await leases.claim(session, "w1", limits={"busy": 1}, now=at(30))
    await session.commit()
    [second] = await leases.claim(session, "w2", limits={"busy": 1}, now=at(30))
    await session.commit()
    assert first.job.backend == "busy"
    assert second.job.id == other.job.id


@pytest.mark.parametrize("per_claim", [1, 2, 8])
async def test_claims_reach_backends_queued_behind_many_jobs_of_full_ones(
    session: AsyncSession, per_claim: int
) -> None:
    # 60 jobs for five backends in a row: the first three fill up long before their queues
    # empty, and the claim window (30 jobs at two per claim) once ended inside them.
    limits = {"b0": 1, "b1": 2, "b2": 3}
    for b in range(5):
        for i in range(12):
            await queue.enqueue(session, f"b{b}", f"model-{i}", now=at(12 * b + i))
    await session.commit()
    running: dict[str, int] = {}
    for _ in range(20):
        changes = await leases.claim(
            session, "w1", limits=limits, default_limit=2, n=per_claim, now=at(100)
        )
        await session.commit()
        if not changes:
            break
        for change in changes:
            running[change.job.backend] = running.get(change.job.backend, 0) + 1
    assert running == {"b0": 1, "b1": 2, "b2": 3, "b3": 2, "b4": 2}


async def test_a_backend_with_a_limit_of_zero_runs_nothing(session: AsyncSession) -> None:
    await queue.enqueue(session, "paused", "llama3", now=T0)
    other = await queue.enqueue(session, "gpu-1", "qwen2", now=at(1))
    await session.commit()
    claimed = await leases.claim(session, "w1", limits={"paused": 0}, n=5, now=at(2))
    await session.commit()
    assert [c.job.id for c in claimed] == [other.job.id]


async def test_a_claim_refuses_a_naive_now(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await leases.claim(session, "w1", now=dt.datetime(2030, 1, 1, 12, 0))


async def test_claimed_times_are_utc_whatever_the_sessions_time_zone(postgres_url: str) -> None:
    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url)
    try:
        async with database.session_factory(engine)() as session:
            await queue.enqueue(session, "gpu-1", "llama3", now=T0)
            await session.commit()
            await session.execute(sa.text("SET TIME ZONE 'Asia/Kolkata'"))
            [claimed] = await leases.claim(session, "w1", now=at(1))
            await session.commit()
    finally:
        await engine.dispose()
    job = claimed.job
    stamps = [job.next_attempt_at, job.lease_expires_at, job.created_at, job.started_at]
    assert [stamp.tzinfo if stamp else None for stamp in stamps] == [dt.UTC] * 4
    assert stamps == [T0, at(61), T0, at(1)]


def _functions(url: str) -> set[str]:
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            query = "SELECT proname FROM pg_proc WHERE proname LIKE 'dwqueue%'"
            return set(connection.scalars(sa.text(query)))
    finally:
        engine.dispose()


def test_revision_0004_creates_the_claim_function_and_its_downgrade_drops_it(
    postgres_url: str,
) -> None:
    migrations.upgrade(postgres_url, "0004")
    assert _functions(postgres_url) == {"dwqueue_claim"}
    migrations.downgrade(postgres_url, "0003")
    assert _functions(postgres_url) == set()
    assert migrations.current(postgres_url) == "0003"


async def test_a_claim_on_a_database_not_migrated_to_0004_says_so(postgres_url: str) -> None:
    migrations.upgrade(postgres_url, "0003")
    engine = database.create_async_engine(postgres_url)
    try:
        async with database.session_factory(engine)() as session:
            with pytest.raises(sa.exc.ProgrammingError, match="dwqueue_claim"):
                await leases.claim(session, "w1", now=T0)
    finally:
        await engine.dispose()


async def test_a_lost_connection_comes_out_as_sqlalchemys_error_and_is_replaced(
    postgres_url: str,
) -> None:
    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url, pool_size=1)
    try:
        sessions = database.session_factory(engine)
        async with sessions() as session:
            await queue.enqueue(session, "gpu-1", "llama3", now=T0)
            pid = await session.scalar(sa.text("SELECT pg_backend_pid()"))
            await session.commit()
        killer = database.create_sync_engine(postgres_url)
        try:
            with killer.connect() as connection:
                connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            killer.dispose()
        async with sessions() as session:
            with pytest.raises(sa.exc.OperationalError) as caught:
                await leases.claim(session, "w1", now=T0)
        assert caught.value.connection_invalidated
        async with sessions() as session:
            [claimed] = await leases.claim(session, "w1", now=T0)
            await session.commit()
    finally:
        await engine.dispose()
    assert claimed.job.state is jobs.JobState.RUNNING


async def test_claim_committed_is_seen_at_once_and_leaves_the_connection_transactional(
    migrated_url: str,
) -> None:
    engine = database.create_async_engine(migrated_url, pool_size=1)
    try:
        sessions = database.session_factory(engine)
        async with sessions() as session:
            queued = await queue.enqueue(session, "gpu-1", "llama3", now=T0)
            await session.commit()
        async with sessions() as session:
            [claimed] = await leases.claim_committed(session, "w1", now=at(1))
        async with sessions() as other:  # the one pooled connection, back from autocommit
            assert (await queue.get(other, queued.job.id)) == claimed.job
            await queue.enqueue(other, "gpu-2", "qwen2", now=at(2))
            await other.rollback()
        async with sessions() as session:
            listed = await queue.list_jobs(session)
    finally:
        await engine.dispose()
    assert claimed.job.state is jobs.JobState.RUNNING
    assert [job.id for job in listed] == [queued.job.id]  # the rollback undid the enqueue


async def test_claim_committed_refuses_a_session_with_a_transaction_under_way(
    session: AsyncSession,
) -> None:
    await queue.enqueue(session, "gpu-1", "llama3", now=T0)
    with pytest.raises(ValueError, match="no transaction under way"):
        await leases.claim_committed(session, "w1", now=at(1))
    await session.commit()
    assert [j.state for j in await queue.list_jobs(session)] == [jobs.JobState.QUEUED]


async def test_after_a_failed_claim_committed_the_connection_claims_again(
    postgres_url: str,
) -> None:
    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url, pool_size=1)
    try:
        sessions = database.session_factory(engine)
        async with sessions() as session:
            await queue.enqueue(session, "gpu-1", "llama3", now=T0)
            await session.commit()
        async with sessions() as session:
            with pytest.raises(sa.exc.DataError, match="out of range"):  # n is an integer
                await leases.claim_committed(session, "w1", n=10**10, now=at(1))
        async with sessions() as session:
            assert [j.state for j in await queue.list_jobs(session)] == [jobs.JobState.QUEUED]
        async with sessions() as session:
            [claimed] = await leases.claim_committed(session, "w1", now=at(2))
    finally:
        await engine.dispose()
    assert claimed.job.lease_owner == "w1"

"""The queue under concurrency: separate connections, and on Postgres separate processes."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import multiprocessing
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from dwqueue import jobs, leases, queue, schema
from runtimestate import database

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


async def _enqueue_alone(url: str, model_key: str) -> tuple[str, bool]:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session:
            change = await queue.enqueue(session, "gpu-1", "llama3", model_key=model_key, now=T0)
            await session.commit()
            return change.job.id, change.event is not None
    finally:
        await engine.dispose()


async def test_twenty_concurrent_enqueues_of_one_model_make_one_job(migrated_url: str) -> None:
    results = await asyncio.gather(
        *(_enqueue_alone(migrated_url, "library/llama3:latest") for _ in range(20))
    )
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    engine = database.create_async_engine(migrated_url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(sa.select(sa.func.count()).select_from(schema.download_jobs))
    finally:
        await engine.dispose()
    assert count == 1


async def _claim_alone(url: str, owner: str) -> list[str]:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session:
            claimed = await leases.claim(session, owner, limits={"gpu-1": 2}, n=5, now=T0)
            await session.commit()
            return [c.job.id for c in claimed]
    finally:
        await engine.dispose()


async def test_concurrent_claimers_never_exceed_a_backends_limit_nor_share_a_job(
    migrated_url: str,
) -> None:
    engine = database.create_async_engine(migrated_url)
    try:
        async with database.session_factory(engine)() as session:
            for i in range(10):
                await queue.enqueue(session, "gpu-1", f"model-{i}", now=T0)
            await session.commit()
        claims = await asyncio.gather(*(_claim_alone(migrated_url, f"w{i}") for i in range(8)))
        async with database.session_factory(engine)() as session:
            running = await leases.running_counts(session)
    finally:
        await engine.dispose()
    claimed = [job_id for ids in claims for job_id in ids]
    assert len(claimed) == 2
    assert len(set(claimed)) == 2
    assert running == {"gpu-1": 2}


def drain_worker(url: str, owner: str) -> list[str]:
    """One worker process: claim (committed at once, as the download cycle claims), then finish,
    until no job is left queued."""
    return asyncio.run(_drain(url, owner, {}, 3, committed=True))


async def _drain(
    url: str, owner: str, limits: dict[str, int], default_limit: int, *, committed: bool
) -> list[str]:
    """Claim two at a time and finish them until nothing is queued; the ids claimed. With
    ``committed`` the claims are `leases.claim_committed`, else `claim` and a commit."""
    engine = database.create_async_engine(url, pool_size=1)
    claimed: list[str] = []
    deadline = time.monotonic() + 45  # a bug must fail the test, not hang it
    try:
        sessions = database.session_factory(engine)
        while time.monotonic() < deadline:
            async with sessions() as session:
                if committed:
                    changes = await leases.claim_committed(
                        session, owner, limits=limits, default_limit=default_limit, n=2
                    )
                else:
                    changes = await leases.claim(
                        session, owner, limits=limits, default_limit=default_limit, n=2
                    )
                    await session.commit()
                for change in changes:
                    await leases.succeed(session, change.job.id, owner)
                await session.commit()
                claimed += [change.job.id for change in changes]
                if not changes:
                    queued = await queue.list_jobs(session, states=[jobs.JobState.QUEUED], limit=1)
                    if not queued:
                        return claimed
        raise TimeoutError(f"{owner} still saw queued jobs after 45 s")
    finally:
        await engine.dispose()


async def test_four_worker_processes_draining_500_jobs_claim_each_exactly_once(
    postgres_url: str,
) -> None:
    import migrations

    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url)
    try:
        async with database.session_factory(engine)() as session:
            for i in range(500):
                await queue.enqueue(session, f"node-{i % 10}", f"model-{i}")  # due now
            await session.commit()
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as pool:
            futures = [pool.submit(drain_worker, postgres_url, f"proc-{i}") for i in range(4)]
            per_worker = [f.result(timeout=60) for f in futures]
        async with database.session_factory(engine)() as session:
            final = await queue.list_jobs(session)
    finally:
        await engine.dispose()
    claims = collections.Counter(job_id for ids in per_worker for job_id in ids)
    assert len(claims) == 500
    assert max(claims.values()) == 1
    assert sum(1 for ids in per_worker if ids) >= 2  # the work really was shared
    assert {job.state for job in final} == {jobs.JobState.SUCCEEDED}
    assert {job.attempts for job in final} == {1}


async def _queue_jobs(engine: AsyncEngine, backends: dict[str, int]) -> None:
    async with database.session_factory(engine)() as session:
        for backend, count in backends.items():
            for i in range(count):
                await queue.enqueue(session, backend, f"model-{i}", now=T0)
        await session.commit()


async def test_a_claim_that_waited_for_a_backend_counts_the_jobs_its_holder_claimed(
    postgres_url: str,
) -> None:
    import migrations

    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url)
    try:
        await _queue_jobs(engine, {"gpu-1": 5})
        sessions = database.session_factory(engine)
        async with sessions() as first, sessions() as second:
            held = await leases.claim(first, "w1", limits={"gpu-1": 2}, now=T0)
            # The second claimer finds gpu-1 taken, waits for it, and must then see the first
            # one's job (committed after its pick began) when it counts gpu-1's running jobs.
            waiting = asyncio.create_task(
                leases.claim(second, "w2", limits={"gpu-1": 2}, n=5, now=T0)
            )
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await first.commit()
            taken = await asyncio.wait_for(waiting, 10)
            await second.commit()
        async with sessions() as session:
            running = await leases.running_counts(session)
    finally:
        await engine.dispose()
    assert len(held) == 1
    assert len(taken) == 1
    assert {c.job.id for c in held}.isdisjoint(c.job.id for c in taken)
    assert running == {"gpu-1": 2}


async def test_a_claim_passes_over_a_backend_another_claimer_holds_without_waiting(
    postgres_url: str,
) -> None:
    import migrations

    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url)
    try:
        await _queue_jobs(engine, {"gpu-1": 3, "gpu-2": 3})
        sessions = database.session_factory(engine)
        async with sessions() as first, sessions() as second:
            held = await leases.claim(first, "w1", default_limit=5, n=1, now=T0)
            taken = await asyncio.wait_for(
                leases.claim(second, "w2", default_limit=5, n=5, now=T0), 5
            )
            await second.commit()
            await first.commit()
    finally:
        await engine.dispose()
    [holder_backend] = {c.job.backend for c in held}
    assert len(taken) == 3
    assert {c.job.backend for c in taken} == {"gpu-1", "gpu-2"} - {holder_backend}


LIMITS = {"b0": 1, "b1": 2, "b2": 3}  # b3 and b4 run the default, 2
FILLED = {**LIMITS, "b3": 2, "b4": 2}


def limit_worker(url: str, owner: str) -> list[str]:
    """One worker process: claim (never finishing a job) until its claims come back empty."""
    return asyncio.run(_claim_to_the_limits(url, owner))


async def _claim_to_the_limits(url: str, owner: str) -> list[str]:
    engine = database.create_async_engine(url, pool_size=1)
    claimed: list[str] = []
    try:
        sessions = database.session_factory(engine)
        empty = 0
        while empty < 5:  # others may still be committing what they hold
            async with sessions() as session:
                changes = await leases.claim(session, owner, limits=LIMITS, default_limit=2, n=2)
                await asyncio.sleep(0.002)  # hold the locks a moment, so claims overlap
                await session.commit()
            claimed += [change.job.id for change in changes]
            empty = 0 if changes else empty + 1
        return claimed
    finally:
        await engine.dispose()


async def test_worker_processes_fill_every_backend_exactly_to_its_limit(postgres_url: str) -> None:
    import migrations

    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url)
    try:
        async with database.session_factory(engine)() as session:
            for backend in FILLED:
                for i in range(12):
                    await queue.enqueue(session, backend, f"model-{i}")  # due now
            await session.commit()
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(6, mp_context=context) as pool:
            futures = [pool.submit(limit_worker, postgres_url, f"proc-{i}") for i in range(6)]
            per_worker = [f.result(timeout=60) for f in futures]
        async with database.session_factory(engine)() as session:
            running = await leases.running_counts(session)
    finally:
        await engine.dispose()
    claims = collections.Counter(job_id for ids in per_worker for job_id in ids)
    assert running == FILLED
    assert sum(claims.values()) == sum(FILLED.values())
    assert max(claims.values()) == 1


# Installed by the test only: fails the commit of any claim that leaves a backend running more
# jobs than LIMITS allow, counting what every other transaction has committed by then. A claim
# counted in a snapshot older than its backend's lock would overshoot here as soon as another
# worker's claim committed in between, even if that job finished a moment later.
_OVER_LIMIT_TRIGGER = (
    """
CREATE FUNCTION test_over_limit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM download_jobs WHERE state = 'running' AND backend = NEW.backend)
        > (CASE NEW.backend WHEN 'b0' THEN 1 WHEN 'b1' THEN 2 WHEN 'b2' THEN 3 ELSE 2 END)
    THEN
        RAISE EXCEPTION USING MESSAGE = NEW.backend || ' runs more jobs than its limit';
    END IF;
    RETURN NULL;
END $$
""",
    """
CREATE CONSTRAINT TRIGGER test_over_limit AFTER UPDATE ON download_jobs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.state = 'running')
    EXECUTE FUNCTION test_over_limit()
""",
)


def churn_worker(url: str, owner: str, committed: bool) -> list[str]:
    """One worker process: claim, commit, finish what it claimed, until nothing is queued."""
    return asyncio.run(_drain(url, owner, LIMITS, 2, committed=committed))


@pytest.mark.parametrize("committed", [False, True], ids=["claim", "claim_committed"])
async def test_no_claim_of_busy_worker_processes_ever_commits_a_backend_over_its_limit(
    postgres_url: str, committed: bool
) -> None:
    import migrations

    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            for statement in _OVER_LIMIT_TRIGGER:
                await conn.exec_driver_sql(statement)
        async with database.session_factory(engine)() as session:
            for i in range(300):
                await queue.enqueue(session, f"b{i % 5}", f"model-{i}")  # due now
            await session.commit()
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(6, mp_context=context) as pool:
            futures = [
                pool.submit(churn_worker, postgres_url, f"proc-{i}", committed) for i in range(6)
            ]
            per_worker = [f.result(timeout=60) for f in futures]
        async with database.session_factory(engine)() as session:
            final = await queue.list_jobs(session)
    finally:
        await engine.dispose()
    claims = collections.Counter(job_id for ids in per_worker for job_id in ids)
    assert len(claims) == 300
    assert max(claims.values()) == 1
    assert {job.state for job in final} == {jobs.JobState.SUCCEEDED}

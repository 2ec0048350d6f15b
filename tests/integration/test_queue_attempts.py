"""The worker's retry policy caps a job's attempts, in `leases.fail` and in the reaper, on
Postgres and SQLite. Time is injected (`now=`): nothing sleeps."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import backoff, events, jobs, leases, queue

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
TWO = backoff.Policy(base_s=10, cap_s=100, max_attempts=2, jitter=backoff.Jitter.NONE)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


async def _claim(session: AsyncSession, now: dt.datetime) -> jobs.Job:
    (claimed,) = await leases.claim(session, "w1", now=now, lease=dt.timedelta(seconds=30))
    await session.commit()
    return claimed.job


async def _fail(
    session: AsyncSession, job_id: str, now: dt.datetime, policy: backoff.Policy | None
) -> jobs.Job:
    change = await leases.fail(
        session,
        job_id,
        "w1",
        error="connection reset",
        error_class=jobs.ErrorClass.TRANSIENT,
        policy=policy,
        now=now,
    )
    await session.commit()
    assert change is not None
    return change.job


async def test_the_policys_max_attempts_fails_a_job_the_queue_would_still_retry(
    session: AsyncSession,
) -> None:
    created = (await queue.enqueue(session, "gpu-1", "llama3", now=T0)).job
    assert created.max_attempts == queue.DEFAULT_MAX_ATTEMPTS == 5
    await _claim(session, at(0))
    first = await _fail(session, created.id, at(1), TWO)
    assert (first.state, first.attempts, first.max_attempts) == (jobs.JobState.QUEUED, 1, 2)
    await _claim(session, at(11))
    change = await leases.fail(
        session,
        created.id,
        "w1",
        error="connection reset",
        error_class=jobs.ErrorClass.TRANSIENT,
        policy=TWO,
        now=at(12),
    )
    await session.commit()
    assert change is not None
    assert isinstance(change.event, events.DownloadFailed)
    assert (change.job.state, change.job.attempts) == (jobs.JobState.FAILED, 2)
    assert change.event.max_attempts == 2  # what a watch shows: "attempt 2/2"


async def test_a_job_may_ask_for_fewer_attempts_than_the_policy_and_no_policy_keeps_its_own(
    session: AsyncSession,
) -> None:
    few = (await queue.enqueue(session, "gpu-1", "a", max_attempts=1, now=T0)).job
    many = (await queue.enqueue(session, "gpu-2", "b", max_attempts=7, now=at(1))).job
    await _claim(session, at(2))
    assert (await _fail(session, few.id, at(3), TWO)).state is jobs.JobState.FAILED
    for attempt in range(1, 4):  # no policy: the job's own 7 governs, as before
        await _claim(session, at(100 * attempt))
        retried = await _fail(session, many.id, at(100 * attempt + 1), None)
        assert (retried.state, retried.max_attempts) == (jobs.JobState.QUEUED, 7)


async def test_the_reaper_applies_the_same_cap_and_stores_it(session: AsyncSession) -> None:
    capped = (await queue.enqueue(session, "gpu-1", "a", now=T0)).job  # asks for 5
    fewer = (await queue.enqueue(session, "gpu-2", "b", max_attempts=1, now=at(1))).job
    await _claim(session, at(2))
    await _claim(session, at(3))
    reaped = await leases.reap(session, max_attempts=2, now=at(40))  # both leases expired
    await session.commit()
    assert {c.job.id: (c.job.state, c.job.max_attempts) for c in reaped} == {
        capped.id: (jobs.JobState.QUEUED, 2),
        fewer.id: (jobs.JobState.FAILED, 1),
    }
    await _claim(session, at(100))
    (last,) = await leases.reap(session, max_attempts=2, now=at(140))
    await session.commit()
    assert (last.job.id, last.job.state, last.job.attempts) == (capped.id, jobs.JobState.FAILED, 2)
    assert isinstance(last.event, events.DownloadFailed)


async def test_the_reaper_without_a_cap_counts_each_jobs_own_attempts(
    session: AsyncSession,
) -> None:
    job = (await queue.enqueue(session, "gpu-1", "a", now=T0)).job
    for round_ in range(3):
        await _claim(session, at(100 * round_))
        (reaped,) = await leases.reap(session, now=at(100 * round_ + 40))
        await session.commit()
        assert (reaped.job.id, reaped.job.state) == (job.id, jobs.JobState.QUEUED)
        assert reaped.job.max_attempts == 5

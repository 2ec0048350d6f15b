"""The download queue on Postgres and SQLite: one suite, the same behaviour on both.

Time is injected (`now=`), so leases expire and backoffs elapse without sleeping.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import backoff, events, jobs, leases, queue

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
NO_JITTER = backoff.Policy(base_s=10, cap_s=100, jitter=backoff.Jitter.NONE)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


async def _enqueue(
    session: AsyncSession, backend: str = "gpu-1", model: str = "llama3", **kw: object
) -> jobs.Job:
    change = await queue.enqueue(session, backend, model, now=kw.pop("now", T0), **kw)  # type: ignore[arg-type]
    await session.commit()
    return change.job


async def _claim_one(session: AsyncSession, owner: str = "w1", **kw: object) -> jobs.Job:
    claimed = await leases.claim(session, owner, now=kw.pop("now", T0), **kw)  # type: ignore[arg-type]
    await session.commit()
    assert len(claimed) == 1, claimed
    return claimed[0].job


async def test_enqueue_twice_returns_the_active_job_without_a_second_event(
    session: AsyncSession,
) -> None:
    first = await queue.enqueue(
        session, "gpu-1", "llama3", model_key="library/llama3:latest", now=T0
    )
    second = await queue.enqueue(
        session, "gpu-1", "llama3:latest", model_key="library/llama3:latest", now=at(1)
    )
    await session.commit()
    assert isinstance(first.event, events.DownloadQueued)
    assert first.event.seq == 1
    assert second.event is None
    assert second.job.id == first.job.id
    assert second.job.model == "llama3"
    assert [j.id for j in await queue.list_jobs(session)] == [first.job.id]


async def test_the_same_model_on_another_backend_is_another_job(session: AsyncSession) -> None:
    a = await _enqueue(session, "gpu-1")
    b = await _enqueue(session, "gpu-2")
    assert a.id != b.id
    assert len(await queue.list_jobs(session, states=[jobs.JobState.QUEUED])) == 2


async def test_a_new_job_is_queued_due_now_with_no_attempts(session: AsyncSession) -> None:
    job = await _enqueue(session, declaration="gen-3", max_attempts=7)
    assert job.state is jobs.JobState.QUEUED
    assert (job.attempts, job.max_attempts, job.seq) == (0, 7, 1)
    assert job.next_attempt_at == T0
    assert job.declaration == "gen-3"
    assert jobs.is_job_id(job.id)
    assert (await queue.get(session, job.id)) == job


async def test_enqueue_refuses_a_backend_name_that_is_not_a_subject_token(
    session: AsyncSession,
) -> None:
    with pytest.raises(ValueError, match="subject token"):
        await queue.enqueue(session, "gpu.1", "llama3", now=T0)


async def test_claim_takes_the_oldest_due_job_and_leases_it(session: AsyncSession) -> None:
    old = await _enqueue(session, model="old", now=T0)
    await _enqueue(session, model="new", now=at(1))
    claimed = await leases.claim(
        session, "worker-a", default_limit=5, lease=dt.timedelta(seconds=30), now=at(2)
    )
    await session.commit()
    assert [c.job.id for c in claimed] == [old.id]
    job = claimed[0].job
    assert job.state is jobs.JobState.RUNNING
    assert (job.lease_owner, job.lease_expires_at) == ("worker-a", at(32))
    assert (job.attempts, job.started_at, job.seq) == (1, at(2), 2)
    assert isinstance(claimed[0].event, events.DownloadStarted)
    assert claimed[0].event.attempt == 1


async def test_claim_returns_nothing_when_nothing_is_due(session: AsyncSession) -> None:
    assert await leases.claim(session, "w1", now=T0) == []
    await _enqueue(session, now=at(10))
    assert await leases.claim(session, "w1", now=at(5)) == []


async def test_claim_respects_each_backends_pull_limit(session: AsyncSession) -> None:
    for model in ("a", "b", "c"):
        await _enqueue(session, "small", model)
        await _enqueue(session, "big", model)
    claimed = await leases.claim(session, "w1", limits={"small": 1}, default_limit=2, n=10, now=T0)
    await session.commit()
    by_backend = sorted(c.job.backend for c in claimed)
    assert by_backend == ["big", "big", "small"]
    assert await leases.running_counts(session) == {"big": 2, "small": 1}
    assert (
        await leases.claim(session, "w2", limits={"small": 1}, default_limit=2, n=10, now=T0) == []
    )
    done = next(c.job for c in claimed if c.job.backend == "small")
    assert await leases.succeed(session, done.id, "w1", now=at(1)) is not None
    again = await leases.claim(session, "w2", limits={"small": 1}, default_limit=2, n=10, now=at(1))
    assert [c.job.backend for c in again] == ["small"]


async def test_heartbeat_extends_the_lease_of_its_owner_only(session: AsyncSession) -> None:
    await _enqueue(session)
    job = await _claim_one(session, lease=dt.timedelta(seconds=30))
    assert await leases.heartbeat(session, job.id, "w1", lease=dt.timedelta(seconds=30), now=at(20))
    assert not await leases.heartbeat(session, job.id, "intruder", now=at(20))
    await session.commit()
    renewed = await queue.get(session, job.id)
    assert renewed is not None
    assert renewed.lease_expires_at == at(50)
    assert renewed.seq == job.seq  # a heartbeat is not an event
    assert await leases.reap(session, now=at(40)) == []


async def test_the_reaper_requeues_a_job_whose_lease_expired_keeping_progress(
    session: AsyncSession,
) -> None:
    await _enqueue(session)
    job = await _claim_one(session, lease=dt.timedelta(seconds=30))
    progress = jobs.Progress("pulling sha256:abc", "sha256:abc", 50, 200)
    await leases.record_progress(
        session, job.id, "w1", progress, lease=dt.timedelta(seconds=30), now=at(5)
    )
    assert await leases.reap(session, now=at(30)) == []
    reaped = await leases.reap(session, now=at(36))
    await session.commit()
    assert len(reaped) == 1
    back = reaped[0].job
    assert back.state is jobs.JobState.QUEUED
    assert back.error_class is jobs.ErrorClass.LEASE_EXPIRED
    assert (back.lease_owner, back.attempts, back.next_attempt_at) == (None, 1, at(36))
    assert back.progress == progress
    assert isinstance(reaped[0].event, events.DownloadRetrying)
    assert not await leases.heartbeat(session, job.id, "w1", now=at(37))
    again = await _claim_one(session, "w2", now=at(37))
    assert (again.id, again.attempts, again.lease_owner) == (job.id, 2, "w2")


async def test_the_reaper_fails_a_job_that_used_its_last_attempt(session: AsyncSession) -> None:
    await _enqueue(session, max_attempts=1)
    job = await _claim_one(session, lease=dt.timedelta(seconds=30))
    reaped = await leases.reap(session, now=at(31))
    await session.commit()
    assert [c.job.state for c in reaped] == [jobs.JobState.FAILED]
    assert isinstance(reaped[0].event, events.DownloadFailed)
    assert reaped[0].job.finished_at == at(31)
    assert await leases.claim(session, "w2", now=at(100)) == []
    assert job.attempts == 1


async def test_the_reaper_renews_and_spares_the_jobs_its_owner_still_runs(
    session: AsyncSession,
) -> None:
    for backend in ("gpu-1", "gpu-2", "gpu-3"):
        await _enqueue(session, backend=backend)
    lease = dt.timedelta(seconds=30)
    claimed = await leases.claim(session, "w1", n=3, lease=lease, now=at(0))
    live, ending, gone = (change.job.id for change in claimed)
    # After an outage of 45 s: w1 still pulls one job and waits to write the end of another.
    assert await leases.renew(session, "w1", [live, ending], lease=lease, now=at(45)) == {
        live,
        ending,
    }
    assert await leases.renew(session, "w2", [gone], lease=lease, now=at(45)) == set()
    reaped = await leases.reap(session, now=at(46), owner="w1", live=[live, ending])
    await session.commit()
    assert [c.job.id for c in reaped] == [gone]  # the one w1 no longer runs
    # Expired again, but still running here: spared without a renewal too.
    assert await leases.reap(session, now=at(80), owner="w1", live=[live, ending]) == []
    assert await leases.succeed(session, ending, "w1", now=at(80)) is not None
    assert len(await leases.reap(session, now=at(81), owner="w2", live=[live])) == 1


async def test_a_transient_failure_is_retried_after_the_backoff_until_attempts_run_out(
    session: AsyncSession,
) -> None:
    created = await _enqueue(session, max_attempts=3)
    job = await _claim_one(session)
    retrying = await leases.fail(
        session,
        job.id,
        "w1",
        error="connection reset",
        error_class=jobs.ErrorClass.TRANSIENT,
        policy=NO_JITTER,
        now=at(1),
    )
    await session.commit()
    assert retrying is not None
    assert isinstance(retrying.event, events.DownloadRetrying)
    assert retrying.job.state is jobs.JobState.QUEUED
    assert retrying.job.next_attempt_at == at(11)  # base 10 s after the first attempt
    assert retrying.event.retry_at == at(11)
    assert retrying.event.error == "connection reset"
    assert await leases.claim(session, "w1", now=at(10)) == []
    second = await _claim_one(session, now=at(11))
    assert second.error is None  # a new attempt starts clean
    retried = await leases.fail(
        session,
        job.id,
        "w1",
        error="timeout",
        error_class=jobs.ErrorClass.TRANSIENT,
        policy=NO_JITTER,
        now=at(12),
    )
    assert retried is not None
    assert retried.job.next_attempt_at == at(32)  # 20 s after the second attempt
    await session.commit()
    await _claim_one(session, now=at(32))
    final = await leases.fail(
        session,
        job.id,
        "w1",
        error="timeout",
        error_class=jobs.ErrorClass.TRANSIENT,
        policy=NO_JITTER,
        now=at(33),
    )
    await session.commit()
    assert final is not None
    assert isinstance(final.event, events.DownloadFailed)
    assert (final.job.state, final.job.attempts) == (jobs.JobState.FAILED, 3)
    assert final.job.id == created.id


async def test_a_permanent_failure_is_not_retried(session: AsyncSession) -> None:
    await _enqueue(session, declaration="gen-1")
    job = await _claim_one(session)
    failed = await leases.fail(
        session,
        job.id,
        "w1",
        error="pull model manifest: file does not exist",
        error_class=jobs.ErrorClass.PERMANENT,
        now=at(1),
    )
    await session.commit()
    assert failed is not None
    assert isinstance(failed.event, events.DownloadFailed)
    assert failed.job.state is jobs.JobState.FAILED
    assert failed.job.attempts == 1 < failed.job.max_attempts
    assert await leases.claim(session, "w1", now=at(10_000)) == []
    latest = await queue.latest(session)
    assert latest[("gpu-1", "llama3")].error_class is jobs.ErrorClass.PERMANENT
    assert latest[("gpu-1", "llama3")].declaration == "gen-1"


async def test_cancel_is_durable_and_stops_a_running_worker(session: AsyncSession) -> None:
    await _enqueue(session)
    job = await _claim_one(session)
    cancelled = await queue.cancel(session, job.id, now=at(1))
    await session.commit()
    assert cancelled is not None
    assert isinstance(cancelled.event, events.DownloadCancelled)
    assert cancelled.job.state is jobs.JobState.CANCELLED
    assert cancelled.job.error_class is jobs.ErrorClass.CANCELLED
    assert not await leases.heartbeat(session, job.id, "w1", now=at(2))
    assert (
        await leases.record_progress(session, job.id, "w1", jobs.Progress("x"), now=at(2)) is None
    )
    assert await leases.succeed(session, job.id, "w1", now=at(2)) is None
    assert await leases.reap(session, now=at(10_000)) == []
    assert await leases.claim(session, "w2", now=at(10_000)) == []
    again = await queue.cancel(session, job.id, now=at(3))
    assert again is not None
    assert again.event is None
    stored = await queue.get(session, job.id)
    assert stored is not None
    assert stored.state is jobs.JobState.CANCELLED
    assert await queue.cancel(session, "01ARZ3NDEKTSV4RRFFQ69G5FAV") is None


async def test_retry_requeues_a_failed_job_with_attempts_reset(session: AsyncSession) -> None:
    await _enqueue(session)
    job = await _claim_one(session)
    failed = await leases.fail(
        session, job.id, "w1", error="bad name", error_class=jobs.ErrorClass.PERMANENT, now=at(1)
    )
    assert failed is not None
    retried = await queue.retry(session, job.id, now=at(2))
    await session.commit()
    assert retried is not None
    assert isinstance(retried.event, events.DownloadQueued)
    assert retried.job.id == job.id
    assert (retried.job.state, retried.job.attempts) == (jobs.JobState.QUEUED, 0)
    assert (retried.job.error, retried.job.finished_at) == (None, None)
    assert retried.job.seq == failed.job.seq + 1
    unchanged = await queue.retry(session, job.id, now=at(3))
    assert unchanged is not None
    assert unchanged.event is None
    assert (await _claim_one(session, now=at(3))).attempts == 1


async def test_retry_of_a_cancelled_job_defers_to_another_active_job(
    session: AsyncSession,
) -> None:
    old = await _enqueue(session)
    await queue.cancel(session, old.id, now=at(1))
    new = await _enqueue(session, now=at(2))
    assert new.id != old.id
    retried = await queue.retry(session, old.id, now=at(3))
    assert retried is not None
    assert retried.event is None
    assert retried.job.id == new.id
    stored = await queue.get(session, old.id)
    assert stored is not None
    assert stored.state is jobs.JobState.CANCELLED


async def test_retry_refuses_a_job_that_succeeded(session: AsyncSession) -> None:
    await _enqueue(session)
    job = await _claim_one(session)
    await leases.succeed(session, job.id, "w1", now=at(1))
    with pytest.raises(queue.QueueError, match="succeeded"):
        await queue.retry(session, job.id, now=at(2))
    assert await queue.retry(session, "01ARZ3NDEKTSV4RRFFQ69G5FAV") is None


async def test_release_gives_the_job_and_its_attempt_back(session: AsyncSession) -> None:
    await _enqueue(session)
    job = await _claim_one(session)
    released = await leases.release(session, job.id, "w1", now=at(1))
    await session.commit()
    assert released is not None
    assert isinstance(released.event, events.DownloadQueued)
    assert (released.job.state, released.job.attempts) == (jobs.JobState.QUEUED, 0)
    assert (await _claim_one(session, "w2", now=at(1))).attempts == 1


async def test_each_event_of_a_job_carries_the_next_sequence_number(
    session: AsyncSession,
) -> None:
    queued = await queue.enqueue(session, "gpu-1", "llama3", now=T0)
    [started] = await leases.claim(session, "w1", now=T0)
    progressed = [
        await leases.record_progress(
            session,
            queued.job.id,
            "w1",
            jobs.Progress("pulling sha256:1", "sha256:1", n, 400),
            now=at(n),
        )
        for n in (100, 200)
    ]
    done = await leases.succeed(session, queued.job.id, "w1", now=at(300))
    await session.commit()
    changes = [queued, started, *progressed, done]
    seqs = [c.event.seq for c in changes if c is not None and c.event is not None]
    assert seqs == [1, 2, 3, 4, 5]
    assert progressed[1] is not None
    assert progressed[1].event is not None
    assert progressed[1].event.percent == 50.0
    assert progressed[1].job.progress.completed == 200
    assert done is not None
    assert isinstance(done.event, events.DownloadSucceeded)
    assert done.job.finished_at == at(300)


async def test_list_and_latest_filter_by_backend_model_and_state(session: AsyncSession) -> None:
    first = await _enqueue(session, "gpu-1", "a", now=T0)
    await queue.cancel(session, first.id, now=at(1))
    second = await _enqueue(session, "gpu-1", "a", now=at(2))
    other = await _enqueue(session, "gpu-2", "b", now=at(3))
    await session.commit()
    assert [j.id for j in await queue.list_jobs(session, backend="gpu-1")] == [first.id, second.id]
    newest = await queue.list_jobs(session, newest_first=True, limit=2)
    assert [j.id for j in newest] == [other.id, second.id]
    cancelled = await queue.list_jobs(session, model_key="a", states=[jobs.JobState.CANCELLED])
    assert [j.id for j in cancelled] == [first.id]
    latest = await queue.latest(session)
    assert {key: job.id for key, job in latest.items()} == {
        ("gpu-1", "a"): second.id,
        ("gpu-2", "b"): other.id,
    }
    assert list(await queue.latest(session, backend="gpu-2")) == [("gpu-2", "b")]

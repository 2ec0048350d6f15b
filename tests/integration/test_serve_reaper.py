"""The reaper `llmctl serve` runs on its own schedule (`controller.scheduled.Work.reap`) takes back
expired leases as the download cycle does: with the worker's ``max_attempts`` cap, publishing
what happened after the commit."""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller import metrics, scheduled
from dwqueue import backoff, events, jobs, leases, queue
from runtimestate import database, downloads, state


@dataclasses.dataclass
class Recorded:
    """A message sink that keeps what it was given."""

    received: list[events.DownloadEvent] = dataclasses.field(default_factory=list)

    async def publish(self, event: events.DownloadEvent) -> bool:
        self.received.append(event)
        return True

    async def publish_message(self, subject: str, payload: bytes) -> bool:
        return True


async def test_the_serve_reaper_caps_attempts_as_the_worker_policy_says_and_publishes(
    migrated_url: str,
) -> None:
    engine = database.create_async_engine(migrated_url)
    sink = Recorded()
    policy = backoff.Policy(base_s=1, cap_s=1, max_attempts=1, jitter=backoff.Jitter.NONE)
    runtime = state.State(
        engine, sink=sink, settings=state.Settings(downloads=downloads.Settings(retry=policy))
    )
    worker = scheduled.Work(runtime, engine, metrics.Metrics())
    sessions = database.session_factory(engine)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    try:
        async with sessions() as session:
            job = (await queue.enqueue(session, "gpu-1", "llama3:latest", now=long_ago)).job
            assert job.max_attempts == queue.DEFAULT_MAX_ATTEMPTS > 1
            await leases.claim(session, "gone", now=long_ago, lease=dt.timedelta(seconds=30))
            await session.commit()
        await worker.reap()  # the lease ran out 59 minutes ago; its one attempt is spent
        async with sessions() as session:
            reaped = await queue.get(session, job.id)
    finally:
        await runtime.aclose()
        await engine.dispose()
    assert reaped is not None
    assert (reaped.state, reaped.attempts, reaped.max_attempts) == (jobs.JobState.FAILED, 1, 1)
    assert [(type(e), e.job_id) for e in sink.received] == [(events.DownloadFailed, job.id)]

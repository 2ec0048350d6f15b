"""The download worker: claims queued pulls and runs them, persisting and publishing progress.

Called by `State.run_download_cycle`. Each cycle reaps expired leases, claims due jobs up to
the free slots of the process-wide limit and each backend's own limit, and starts one task per
job; the tasks outlive the cycle (a pull takes minutes), so the scheduler never waits on them.
A task pulls through the backend's adapter, turns Ollama's progress into throttled row updates
and events (coalesced to a few a second, every phase change and the end always), heartbeats
its lease, and stops within one heartbeat of a cancel (at once when a cancel request makes
`Downloads.check` read the row first). Short of a shutdown (`stop`), only the database stops
a pull: when its row is no longer this worker's running job. A stopped pull whose job is still
ours is released, never left running. The heartbeats stop before the end of a pull is written,
so nothing interrupts the terminal write and its event. Retries follow `Settings.retry`, whose
``max_attempts`` caps every job's own. Every write goes through `recorder.Recorder`, which
publishes events only after the database commit; the database stays the truth when NATS is down.

A database outage never fails a download or costs it an attempt: a progress update that cannot
be written is skipped (the next one carries newer figures) and the pull goes on; heartbeats
keep trying; the end of a pull (success, failure) is retried with backoff until the database
takes it. Should the outage outlast the lease, this process's reaper renews the leases of the
jobs it still runs before it reaps (it never takes back its own live jobs); only another
replica's reaper, getting there first, can give such a job to the next claimer, whose pull of the
model the node now has ends at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import backoff, coalescer, jobs, rows
from runtimestate import clock, desired, errors
from runtimestate.backends import adapters, base
from runtimestate.desired import spec
from runtimestate.downloads import metering, recorder

log = structlog.get_logger(__name__)
_ENDED = ("succeeded", "failed", "cancelled")  # outcomes that change the backend's status


@dataclasses.dataclass(frozen=True)
class Settings:
    concurrency: int = 8  # pulls at once in this process, over all backends
    lease: dt.timedelta = dt.timedelta(seconds=30)
    heartbeat_s: float = 0.5  # a cancel is noticed within this
    events_per_second: float = 4.0
    retry: backoff.Policy = dataclasses.field(default_factory=backoff.Policy)


@dataclasses.dataclass(frozen=True)
class CycleReport:
    reaped: int
    claimed: tuple[str, ...]
    running: int


class Downloads:
    """The download side of `State`: one per process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pool: adapters.AdapterPool,
        *,
        owner: str,
        sink: recorder.EventSink | None = None,
        settings: Settings = Settings(),
        rng: random.Random | None = None,
        on_end: Callable[[str], None] | None = None,
        clock: clock.Clock = clock.SYSTEM,
    ) -> None:
        """``on_end(backend)`` is called (and must return at once) when a pull on ``backend``
        ended (succeeded, failed or cancelled, each written and published): `State` brings
        that backend's status up to date with it. ``clock`` gives the instants the leases and
        the retries are decided by, and the heartbeats' and retries' waits."""
        self._clock = clock
        self._pool = pool
        self._settings = settings
        self._recorder = recorder.Recorder(
            sessions,
            owner=owner,
            lease=settings.lease,
            retry=settings.retry,
            sink=sink,
            clock=clock,
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._on_end = on_end
        self._coalescer = coalescer.Coalescer(settings.events_per_second)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()  # jobs that stopped being ours (cancelled, reaped)
        self._finishing: set[str] = set()  # pulls over, their end being written: not cancellable

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._tasks)

    async def reap(self, now: dt.datetime | None = None) -> list[rows.Change]:
        """Take back every job whose lease expired (any replica's), with this worker's
        ``max_attempts`` cap, and publish what happened to them after the commit.

        The jobs this process still runs (pulling, or writing an end a database outage held up)
        are never reaped: their leases are renewed first, in the same transaction, so an outage
        longer than the lease does not turn a finished pull into a second attempt."""
        reaped = await self._recorder.reap(frozenset(self._tasks), now or self._clock.now())
        await self._recorder.publish(*reaped)
        return reaped

    async def run_cycle(self, state: desired.DesiredState) -> CycleReport:
        """Reap, claim and start pulls; returns at once (the pulls go on in the background)."""
        now = self._clock.now()
        reaped = await self.reap(now)
        free = self._settings.concurrency - len(self._tasks)
        claimed: list[rows.Change] = []
        if free > 0:
            limits = {b.name: b.spec.max_pulls for b in state.backends}
            claimed = await self._recorder.claim(limits, free, now)
            await self._recorder.publish(*claimed)
        for change in claimed:
            self._start(change.job, state.backend(change.job.backend))
        return CycleReport(len(reaped), tuple(c.job.id for c in claimed), len(self._tasks))

    def _start(self, job: jobs.Job, backend: spec.Backend | None) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job, backend))
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))

    def cancel_local(self, job_id: str) -> bool:
        """Stop our task for ``job_id`` now, for a job the database says is no longer ours.

        False when this process does not run it, or when its pull has ended and the task is
        writing and publishing its end: that must not be interrupted (its terminal event would be
        lost), and the final write does nothing for a job that is not ours anyway."""
        task = self._tasks.get(job_id)
        if task is None or job_id in self._finishing:
            return False
        self._lost.add(job_id)
        task.cancel()
        return True

    async def check(self, job_id: str) -> bool:
        """The fast path of a cancel request: check ``job_id``'s row now, as the next heartbeat
        would, and stop our pull only when the row says the job is no longer ours (cancelled,
        or reaped and given to another worker). A request for a job we still own changes
        nothing but the lease's expiry. True when a pull was stopped. A database error is
        logged and left to the heartbeats; nothing is raised."""
        if job_id not in self._tasks or job_id in self._finishing:
            return False
        try:
            ours = await self._recorder.heartbeat(job_id)
        except errors.DatabaseUnavailable as exc:
            log.warning("cancel request not checked; the heartbeat will", job_id=job_id,
                        error=exc.detail)  # fmt: skip
            return False
        return not ours and self.cancel_local(job_id)

    async def drain(self, wait_s: float | None = None) -> None:
        """Wait for every pull this process runs to end."""
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=wait_s)

    async def stop(self) -> None:
        """Interrupt every pull and give its job back to the queue (progress kept)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _run(self, job: jobs.Job, backend: spec.Backend | None) -> None:
        """One job from claim to its end. The heartbeats run only while the pull does: they are
        stopped (and awaited) before the end is written, so nothing cancels this task between
        the commit of the terminal state and the publishing of its event."""
        log_ = log.bind(job_id=job.id, backend=job.backend, model=job.model)
        started = time.monotonic()
        beat = asyncio.get_running_loop().create_task(self._heartbeats(job.id))
        outcome = "cancelled"
        try:
            failure: Exception | None = None
            try:
                pulled = await self._pull(job, backend)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is classified and recorded
                pulled, failure = False, exc
            await self._stop_heartbeats(job.id, beat)
            if failure is not None:
                outcome = await self._failed(job, failure, log_)
            elif pulled:
                outcome = await self._succeeded(job, backend)
        except asyncio.CancelledError:
            outcome = await self._interrupted(job)
        finally:
            beat.cancel()
            self._finishing.discard(job.id)
            self._coalescer.forget(job.id)
            self._lost.discard(job.id)
            log_.info("download", outcome=outcome, duration_s=round(time.monotonic() - started, 3))
            if self._on_end is not None and outcome in _ENDED:
                self._on_end(job.backend)

    async def _stop_heartbeats(self, job_id: str, beat: asyncio.Task[None]) -> None:
        self._finishing.add(job_id)  # from here on `cancel_local` leaves this task alone
        beat.cancel()
        await asyncio.wait([beat])  # a cancel of this task still arrives here, before the end

    async def _interrupted(self, job: jobs.Job) -> str:
        """The task was cancelled: by `cancel_local` (the job is no longer ours) or by `stop`.
        Either way the job is released if it is still ours (a no-op otherwise), so nothing is
        left running without a pull behind it; the attempt is given back."""
        change = await asyncio.shield(self._recorder.release(job.id))
        await self._recorder.publish(change)
        return "cancelled" if change is None and job.id in self._lost else "released"

    async def _failed(self, job: jobs.Job, exc: Exception, log_: structlog.BoundLogger) -> str:
        """Record a failed attempt; the outcome: ``retrying``, ``failed``, or ``cancelled`` when
        the job stopped being ours meanwhile."""
        if not isinstance(exc, errors.LlmctlError):
            log_.exception("download failed unexpectedly", exc_info=exc)
        change = await self._recorder.fail(job.id, exc, self._rng.random())
        await self._recorder.publish(change)
        if change is None:
            return "cancelled"
        return "retrying" if change.job.state is jobs.JobState.QUEUED else "failed"

    async def _pull(self, job: jobs.Job, backend: spec.Backend | None) -> bool:
        """Pull ``job``'s model, recording progress. True when the pull finished; False when
        the job stopped being ours meanwhile (the pull is then stopped: its stream closed)."""
        if backend is None:
            raise errors.ConfigurationError(
                "the backend is no longer declared", backend=job.backend
            )
        adapter = self._pool.get(backend.spec)
        if not adapter.capabilities.can_pull or not isinstance(adapter, base.Puller):
            raise errors.ConfigurationError(
                f"{backend.spec.type.value} backends cannot pull models", backend=job.backend
            )
        stream = adapter.pull(job.model)
        try:
            return await self._follow(job, stream)
        finally:  # closing the stream closes the connection: Ollama stops the download
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    async def _follow(self, job: jobs.Job, stream: AsyncIterator[base.PullProgress]) -> bool:
        progress_meter = metering.Meter()
        async for line in stream:
            # Real time: the rate and ETA of real bytes, and a cap on real traffic to NATS.
            now = time.monotonic()
            progress = progress_meter.update(
                line.status, line.digest, line.completed, line.total, now
            )
            if not self._coalescer.admit(job.id, line.status, now):
                continue
            try:
                change = await self._recorder.progress(job.id, progress)
            except errors.DatabaseUnavailable as exc:  # the pull goes on; the next one is newer
                log.warning("database unavailable; progress not recorded", job_id=job.id,
                            error=exc.detail)  # fmt: skip
                continue
            if change is None:  # cancelled or reaped meanwhile: it is not ours any more
                self._lost.add(job.id)
                return False
            await self._recorder.publish(change)
        return True

    async def _succeeded(self, job: jobs.Job, backend: spec.Backend | None) -> str:
        """Record the finished pull; the outcome (``cancelled`` when the job stopped being ours
        just before: the model is on the node, but the row says what the user asked)."""
        assert backend is not None  # `_pull` refuses a job whose backend is gone
        change = await self._recorder.succeed(job, backend.name)
        await self._recorder.publish(change)
        return "cancelled" if change is None else "succeeded"

    async def _heartbeats(self, job_id: str) -> None:
        """Extend the lease and watch the row; cancel the pull when the job is not ours."""
        interval = self._settings.heartbeat_s
        while True:
            await self._clock.sleep(interval)
            try:
                ours = await self._recorder.heartbeat(job_id)
            except errors.DatabaseUnavailable as exc:  # a database blip must not kill the pull
                log.warning("heartbeat failed", job_id=job_id, error=exc.detail)
                continue
            except Exception:
                log.warning("heartbeat failed", job_id=job_id, exc_info=True)
                continue
            if not ours:
                self.cancel_local(job_id)
                return

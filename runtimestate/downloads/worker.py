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
``max_attempts`` caps every job's own. Events are published only after the database commit; the
database stays the truth when NATS is down.

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
import functools
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import backoff, coalescer, events, jobs, leases, rows
from runtimestate import clock, database, desired, errors
from runtimestate.backends import adapters, base
from runtimestate.desired import spec
from runtimestate.downloads import metering
from runtimestate.reconcile import status

log = structlog.get_logger(__name__)
T = TypeVar("T")
_RETRY_FIRST_S = 0.1
_RETRY_CAP_S = 2.0
_ENDED = ("succeeded", "failed", "cancelled")  # outcomes that change the backend's status


class EventSink(Protocol):
    """Where events go after commit (`dwqueue.publisher.Publisher`); must never raise."""

    async def publish(self, event: events.DownloadEvent) -> bool: ...


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


def classify(exc: BaseException) -> tuple[jobs.ErrorClass, str]:
    """The queue's error class and a short reason for an exception that ended a pull."""
    if isinstance(exc, errors.InsufficientDisk):
        return jobs.ErrorClass.INSUFFICIENT_DISK, f"insufficient_disk: {exc.detail}"
    if isinstance(exc, errors.TerminalError | errors.ConfigurationError):
        return jobs.ErrorClass.PERMANENT, f"{exc.reason.value}: {exc.detail}"
    if isinstance(exc, errors.LlmctlError):
        return jobs.ErrorClass.TRANSIENT, f"{exc.reason.value}: {exc.detail}"
    return jobs.ErrorClass.TRANSIENT, f"unexpected: {type(exc).__name__}: {exc}"


class Downloads:
    """The download side of `State`: one per process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pool: adapters.AdapterPool,
        *,
        owner: str,
        sink: EventSink | None = None,
        settings: Settings = Settings(),
        rng: random.Random | None = None,
        on_end: Callable[[str], None] | None = None,
        clock: clock.Clock = clock.SYSTEM,
    ) -> None:
        """``on_end(backend)`` is called (and must return at once) when a pull on ``backend``
        ended (succeeded, failed or cancelled, each written and published): `State` brings
        that backend's status up to date with it. ``clock`` gives the instants the leases and
        the retries are decided by, and the heartbeats' and retries' waits."""
        self._sessions = sessions
        self._clock = clock
        self._pool = pool
        self._owner = owner
        self._sink = sink
        self._settings = settings
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._on_end = on_end
        self._coalescer = coalescer.Coalescer(settings.events_per_second)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()  # jobs that stopped being ours (cancelled, reaped)
        self._finishing: set[str] = set()  # pulls over, their end being written: not cancellable

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._tasks)

    async def _tx(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return await database.transaction(self._sessions, work)

    async def _publish(self, *changes: rows.Change | None) -> None:
        if self._sink is None:
            return
        for change in changes:
            if change is not None and change.event is not None:
                await self._sink.publish(change.event)

    async def reap(self, now: dt.datetime | None = None) -> list[rows.Change]:
        """Take back every job whose lease expired (any replica's), with this worker's
        ``max_attempts`` cap, and publish what happened to them after the commit.

        The jobs this process still runs (pulling, or writing an end a database outage held up)
        are never reaped: their leases are renewed first, in the same transaction, so an outage
        longer than the lease does not turn a finished pull into a second attempt."""
        now = now or self._clock.now()
        cap = self._settings.retry.max_attempts
        live = frozenset(self._tasks)

        async def work(session: AsyncSession) -> list[rows.Change]:
            lease = self._settings.lease
            await leases.renew(session, self._owner, live, lease=lease, now=now)
            return await leases.reap(
                session, max_attempts=cap, now=now, owner=self._owner, live=live
            )

        reaped = await self._tx(work)
        await self._publish(*reaped)
        return reaped

    async def run_cycle(self, state: desired.DesiredState) -> CycleReport:
        """Reap, claim and start pulls; returns at once (the pulls go on in the background)."""
        now = self._clock.now()
        reaped = await self.reap(now)
        free = self._settings.concurrency - len(self._tasks)
        claimed: list[rows.Change] = []
        if free > 0:
            limits = {b.name: b.spec.max_pulls for b in state.backends}
            with database.guarded():
                async with self._sessions() as session:
                    claimed = await leases.claim_committed(
                        session,
                        self._owner,
                        limits=limits,
                        n=free,
                        lease=self._settings.lease,
                        now=now,
                    )
            await self._publish(*claimed)
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
            ours = await self._tx(
                lambda s: leases.heartbeat(
                    s, job_id, self._owner, lease=self._settings.lease, now=self._clock.now()
                )
            )
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
        change = await asyncio.shield(
            self._durably(
                lambda s: leases.release(s, job.id, self._owner, now=self._clock.now()),
                job.id,
                "release",
                give_up_after_s=self._settings.lease.total_seconds(),
            )
        )
        await self._publish(change)
        return "cancelled" if change is None and job.id in self._lost else "released"

    async def _failed(self, job: jobs.Job, exc: Exception, log_: structlog.BoundLogger) -> str:
        """Record a failed attempt; the outcome: ``retrying``, ``failed``, or ``cancelled`` when
        the job stopped being ours meanwhile."""
        error_class, reason = classify(exc)
        if not isinstance(exc, errors.LlmctlError):
            log_.exception("download failed unexpectedly", exc_info=exc)
        draw = self._rng.random()

        async def work(session: AsyncSession) -> rows.Change | None:
            return await leases.fail(
                session,
                job.id,
                self._owner,
                error=reason,
                error_class=error_class,
                policy=self._settings.retry,
                draw=draw,
                now=self._clock.now(),
            )

        change = await self._durably(work, job.id, "failure")
        await self._publish(change)
        if change is None:
            return "cancelled"
        return "retrying" if change.job.state is jobs.JobState.QUEUED else "failed"

    async def _durably(
        self,
        work: Callable[[AsyncSession], Awaitable[T]],
        job_id: str,
        what: str,
        *,
        give_up_after_s: float | None = None,
    ) -> T | None:
        """Run ``work`` in a transaction, retrying with backoff while the database is down;
        None when ``give_up_after_s`` passed first (the lease's expiry then does the work)."""
        delay = _RETRY_FIRST_S
        deadline = None if give_up_after_s is None else self._clock.monotonic() + give_up_after_s
        while True:
            try:
                return await self._tx(work)
            except errors.DatabaseUnavailable as exc:
                if deadline is not None and self._clock.monotonic() + delay > deadline:
                    log.warning("database unavailable; left to the lease", job_id=job_id,
                                during=what, error=exc.detail)  # fmt: skip
                    return None
                log.warning("database unavailable; retrying", job_id=job_id, during=what,
                            error=exc.detail, retry_in_s=delay)  # fmt: skip
            await self._clock.sleep(delay)
            delay = min(delay * 2, _RETRY_CAP_S)

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
                change = await self._tx(functools.partial(self._record, job.id, progress))
            except (
                errors.DatabaseUnavailable
            ) as exc:  # the pull goes on; the next update is newer anyway
                log.warning("database unavailable; progress not recorded", job_id=job.id,
                            error=exc.detail)  # fmt: skip
                continue
            if change is None:  # cancelled or reaped meanwhile: it is not ours any more
                self._lost.add(job.id)
                return False
            await self._publish(change)
        return True

    async def _record(
        self, job_id: str, progress: jobs.Progress, session: AsyncSession
    ) -> rows.Change | None:
        return await leases.record_progress(
            session,
            job_id,
            self._owner,
            progress,
            lease=self._settings.lease,
            now=self._clock.now(),
        )

    async def _succeeded(self, job: jobs.Job, backend: spec.Backend | None) -> str:
        """Record the finished pull; the outcome (``cancelled`` when the job stopped being ours
        just before: the model is on the node, but the row says what the user asked)."""
        assert backend is not None  # `_pull` refuses a job whose backend is gone

        async def work(session: AsyncSession) -> rows.Change | None:
            now = self._clock.now()
            change = await leases.succeed(session, job.id, self._owner, now=now)
            if change is not None:
                await status.record_pulled(
                    session, backend.name, job.model, job.model_key, job.id, now
                )
            return change

        change = await self._durably(work, job.id, "success")
        await self._publish(change)
        return "cancelled" if change is None else "succeeded"

    async def _heartbeats(self, job_id: str) -> None:
        """Extend the lease and watch the row; cancel the pull when the job is not ours."""
        interval = self._settings.heartbeat_s
        while True:
            await self._clock.sleep(interval)
            try:
                ours = await self._tx(
                    lambda s: leases.heartbeat(
                        s, job_id, self._owner, lease=self._settings.lease, now=self._clock.now()
                    )
                )
            except errors.DatabaseUnavailable as exc:  # a database blip must not kill the pull
                log.warning("heartbeat failed", job_id=job_id, error=exc.detail)
                continue
            except Exception:
                log.warning("heartbeat failed", job_id=job_id, exc_info=True)
                continue
            if not ours:
                self.cancel_local(job_id)
                return

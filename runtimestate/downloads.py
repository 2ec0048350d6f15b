"""The download worker: claims queued pulls and runs them, persisting and publishing progress.

Called by `State.run_download_cycle`. Each cycle reaps expired leases, claims due jobs up to
the free slots of the process-wide limit and each backend's own limit, and starts one task per
job; the tasks outlive the cycle (a pull takes minutes), so the scheduler never waits on them.
A task pulls through the backend's adapter, turns Ollama's progress into throttled row updates
and events (coalesced to a few a second, every phase change and the end always), heartbeats
its lease, and stops within one heartbeat of a cancel. Events are published only after the
database commit; the database stays the truth when NATS is down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import backoff, coalescer, events, jobs, leases, rows
from runtimestate import adapters, desired, errors, meter, spec, status
from runtimestate.backends import base

log = structlog.get_logger(__name__)
T = TypeVar("T")


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
    ) -> None:
        self._sessions = sessions
        self._pool = pool
        self._owner = owner
        self._sink = sink
        self._settings = settings
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._coalescer = coalescer.Coalescer(settings.events_per_second)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()  # jobs that stopped being ours (cancelled, reaped)

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._tasks)

    async def _tx(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with self._sessions() as session, session.begin():
            return await work(session)

    async def _publish(self, *changes: rows.Change | None) -> None:
        if self._sink is None:
            return
        for change in changes:
            if change is not None and change.event is not None:
                await self._sink.publish(change.event)

    async def run_cycle(self, state: desired.DesiredState) -> CycleReport:
        """Reap, claim and start pulls; returns at once (the pulls go on in the background)."""
        now = rows.utcnow()
        reaped = await self._tx(lambda s: leases.reap(s, now=now))
        await self._publish(*reaped)
        free = self._settings.concurrency - len(self._tasks)
        claimed: list[rows.Change] = []
        if free > 0:
            limits = {b.name: b.spec.max_pulls for b in state.backends}
            async with self._sessions() as session:
                claimed = await leases.claim_committed(
                    session, self._owner, limits=limits, n=free, lease=self._settings.lease, now=now
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
        """The fast path of a cancel: stop our task for ``job_id`` now (the row is the truth)."""
        task = self._tasks.get(job_id)
        if task is None:
            return False
        self._lost.add(job_id)
        task.cancel()
        return True

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
        log_ = log.bind(job_id=job.id, backend=job.backend, model=job.model)
        started = time.monotonic()
        beat = asyncio.get_running_loop().create_task(self._heartbeats(job.id))
        outcome = "succeeded"
        try:
            await self._pull(job, backend)
        except asyncio.CancelledError:
            outcome = "cancelled" if job.id in self._lost else "released"
            if job.id not in self._lost:
                change = await asyncio.shield(
                    self._tx(lambda s: leases.release(s, job.id, self._owner))
                )
                await self._publish(change)
        except Exception as exc:  # every failure is classified and recorded
            outcome = "failed"
            await self._failed(job, exc, log_)
        finally:
            beat.cancel()
            self._coalescer.forget(job.id)
            self._lost.discard(job.id)
            log_.info("download", outcome=outcome, duration_s=round(time.monotonic() - started, 3))

    async def _failed(self, job: jobs.Job, exc: Exception, log_: structlog.BoundLogger) -> None:
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
            )

        change = await self._tx(work)
        await self._publish(change)

    async def _pull(self, job: jobs.Job, backend: spec.Backend | None) -> None:
        if backend is None:
            raise errors.ConfigurationError(
                "the backend is no longer declared", backend=job.backend
            )
        adapter = self._pool.get(backend.spec)
        if not adapter.capabilities.can_pull or not isinstance(adapter, base.Puller):
            raise errors.ConfigurationError(
                f"{backend.spec.type.value} backends cannot pull models", backend=job.backend
            )
        progress_meter = meter.Meter()
        async for line in adapter.pull(job.model):
            now = time.monotonic()
            progress = progress_meter.update(
                line.status, line.digest, line.completed, line.total, now
            )
            if not self._coalescer.admit(job.id, line.status, now):
                continue
            change = await self._tx(functools.partial(self._record, job.id, progress))
            if change is None:  # cancelled or reaped meanwhile: it is not ours any more
                self._lost.add(job.id)
                return
            await self._publish(change)
        await self._succeeded(job, backend)

    async def _record(
        self, job_id: str, progress: jobs.Progress, session: AsyncSession
    ) -> rows.Change | None:
        return await leases.record_progress(
            session, job_id, self._owner, progress, lease=self._settings.lease
        )

    async def _succeeded(self, job: jobs.Job, backend: spec.Backend) -> None:
        async def work(session: AsyncSession) -> rows.Change | None:
            change = await leases.succeed(session, job.id, self._owner)
            if change is not None:
                await status.record_pulled(
                    session, backend.name, job.model, job.model_key, job.id, rows.utcnow()
                )
            return change

        await self._publish(await self._tx(work))

    async def _heartbeats(self, job_id: str) -> None:
        """Extend the lease and watch the row; cancel the pull when the job is not ours."""
        interval = self._settings.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            try:
                ours = await self._tx(
                    lambda s: leases.heartbeat(s, job_id, self._owner, lease=self._settings.lease)
                )
            except Exception:  # a database blip must not kill the pull
                log.warning("heartbeat failed", job_id=job_id, exc_info=True)
                continue
            if not ours:
                self.cancel_local(job_id)
                return

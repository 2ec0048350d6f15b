"""The download worker's writes: every change to a pull's job, committed, then published.

`Recorder` is the only part of the worker (`downloads.worker.Downloads`) that opens a
transaction: it renews and reaps leases, claims jobs, heartbeats, records progress and writes
a pull's end (success, failure, release) through `dwqueue.leases`, and publishes a change's
event only after its commit (`publish`). `durably` retries an end with capped backoff while the
database is down, so an outage never fails a download. `classify` decides which error class a
failure is written with. It must not run pulls, start tasks or decide when to write: the worker
does; and it never publishes before the commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import backoff, events, jobs, leases, rows
from runtimestate import clock, database, errors
from runtimestate.reconcile import status

log = structlog.get_logger(__name__)
T = TypeVar("T")
_RETRY_FIRST_S = 0.1
_RETRY_CAP_S = 2.0


class EventSink(Protocol):
    """Where events go after commit (`dwqueue.publisher.Publisher`); must never raise."""

    async def publish(self, event: events.DownloadEvent) -> bool: ...


def classify(exc: BaseException) -> tuple[jobs.ErrorClass, str]:
    """The queue's error class and a short reason for an exception that ended a pull."""
    if isinstance(exc, errors.InsufficientDisk):
        return jobs.ErrorClass.INSUFFICIENT_DISK, f"insufficient_disk: {exc.detail}"
    if isinstance(exc, errors.TerminalError | errors.ConfigurationError):
        return jobs.ErrorClass.PERMANENT, f"{exc.reason.value}: {exc.detail}"
    if isinstance(exc, errors.LlmctlError):
        return jobs.ErrorClass.TRANSIENT, f"{exc.reason.value}: {exc.detail}"
    return jobs.ErrorClass.TRANSIENT, f"unexpected: {type(exc).__name__}: {exc}"


class Recorder:
    """The writes of one worker (``owner``), each in a transaction of its own."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        owner: str,
        lease: dt.timedelta,
        retry: backoff.Policy,
        sink: EventSink | None,
        clock: clock.Clock,
    ) -> None:
        self._sessions = sessions
        self._owner = owner
        self._lease = lease
        self._retry = retry
        self._sink = sink
        self._clock = clock

    async def transaction(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work`` in one transaction. Raises `errors.DatabaseUnavailable` when down."""
        return await database.transaction(self._sessions, work)

    async def publish(self, *changes: rows.Change | None) -> None:
        """Publish the event of each change (committed already); never raises."""
        if self._sink is None:
            return
        for change in changes:
            if change is not None and change.event is not None:
                await self._sink.publish(change.event)

    async def reap(self, live: frozenset[str], now: dt.datetime) -> list[rows.Change]:
        """Renew the leases of ``live`` (jobs this process still runs), then take back every
        expired job (any replica's) with the retry policy's ``max_attempts`` cap."""
        cap = self._retry.max_attempts

        async def work(session: AsyncSession) -> list[rows.Change]:
            await leases.renew(session, self._owner, live, lease=self._lease, now=now)
            return await leases.reap(
                session, max_attempts=cap, now=now, owner=self._owner, live=live
            )

        return await self.transaction(work)

    async def claim(self, limits: Mapping[str, int], n: int, now: dt.datetime) -> list[rows.Change]:
        """Claim up to ``n`` due jobs within each backend's limit, committed at once."""
        with database.guarded():
            async with self._sessions() as session:
                return await leases.claim_committed(
                    session, self._owner, limits=limits, n=n, lease=self._lease, now=now
                )

    async def heartbeat(self, job_id: str) -> bool:
        """Extend ``job_id``'s lease; False when the job is no longer this worker's."""
        return await self.transaction(
            lambda s: leases.heartbeat(s, job_id, self._owner, lease=self._lease,
                                       now=self._clock.now())
        )  # fmt: skip

    async def progress(self, job_id: str, progress: jobs.Progress) -> rows.Change | None:
        """Record ``progress``; None when the job is no longer this worker's."""
        return await self.transaction(
            lambda s: leases.record_progress(s, job_id, self._owner, progress, lease=self._lease,
                                             now=self._clock.now())
        )  # fmt: skip

    async def release(self, job_id: str) -> rows.Change | None:
        """Give the job back to the queue (its attempt too), retrying while the database is
        down for at most one lease; None when it was not ours or the lease will do it."""
        return await self.durably(
            lambda s: leases.release(s, job_id, self._owner, now=self._clock.now()),
            job_id,
            "release",
            give_up_after_s=self._lease.total_seconds(),
        )

    async def fail(self, job_id: str, exc: BaseException, draw: float) -> rows.Change | None:
        """Record a failed attempt (retried or final, per `classify` and the retry policy,
        ``draw`` being the jitter); None when the job is no longer ours."""
        error_class, reason = classify(exc)

        async def work(session: AsyncSession) -> rows.Change | None:
            return await leases.fail(
                session,
                job_id,
                self._owner,
                error=reason,
                error_class=error_class,
                policy=self._retry,
                draw=draw,
                now=self._clock.now(),
            )

        return await self.durably(work, job_id, "failure")

    async def succeed(self, job: jobs.Job, backend: str) -> rows.Change | None:
        """Record the finished pull and the model now on ``backend``; None when the job is
        no longer ours (the row then keeps what the user asked)."""

        async def work(session: AsyncSession) -> rows.Change | None:
            now = self._clock.now()
            change = await leases.succeed(session, job.id, self._owner, now=now)
            if change is not None:
                await status.record_pulled(session, backend, job.model, job.model_key, job.id, now)
            return change

        return await self.durably(work, job.id, "success")

    async def durably(
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
                return await self.transaction(work)
            except errors.DatabaseUnavailable as exc:
                if deadline is not None and self._clock.monotonic() + delay > deadline:
                    log.warning("database unavailable; left to the lease", job_id=job_id,
                                during=what, error=exc.detail)  # fmt: skip
                    return None
                log.warning("database unavailable; retrying", job_id=job_id, during=what,
                            error=exc.detail, retry_in_s=delay)  # fmt: skip
            await self._clock.sleep(delay)
            delay = min(delay * 2, _RETRY_CAP_S)

"""The work the scheduler of `controller.composition` triggers, guarded so the scheduler survives.

`Work` wraps the runtime's cycles for the APScheduler jobs and the NATS trigger: the backend
cycle, the download cycle and the lease reaper (which also writes the replica's heartbeat and
refreshes the download gauges). An
exception is logged (with its traceback when unexpected), counted in ``llmctl_errors_total``
and that kind of work is skipped until a capped exponential backoff passes; an explicit trigger
runs regardless. After a database error, each skipped tick probes the database (``SELECT 1``):
once a probe has found it down and a later one finds it back, the work resumes at that tick
rather than at the end of a backoff that a long outage has grown to its cap. Triggered cycles
start at most once per ``min_interval_s`` (`controller.throttle`); triggers arriving while one
runs or inside the window coalesce into one more run at the window's end. Built by the
composition root, which gives it the settings it needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from controller import metrics, throttle
from dwqueue import backoff, schema
from runtimestate import database, errors, state

log = structlog.get_logger(__name__)
FAILURE_BACKOFF = backoff.Policy(base_s=1.0, cap_s=30.0, max_attempts=1_000_000)
PROBE_TIMEOUT_S = 2.0


class Work:
    """What the scheduler's jobs call. Each run is guarded: an exception is logged and counted,
    and the same kind of work is skipped until its backoff passes (an explicit trigger runs
    regardless). Never raises into the scheduler."""

    def __init__(
        self,
        runtime: state.State,
        engine: AsyncEngine,
        meter: metrics.Metrics,
        clock: Callable[[], float] = time.monotonic,
        *,
        min_interval_s: float = 0.0,
    ) -> None:
        self._state = runtime
        self._engine = engine
        self._metrics = meter
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._resume_at: dict[str, float] = {}
        # Kinds backing off after a database error: True once a probe found the database down.
        self._outage: dict[str, bool] = {}
        self._downloads = asyncio.Lock()  # two claims at once could exceed the concurrency
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kick = asyncio.Event()
        self._throttle = throttle.Throttle(min_interval_s)
        self._closing = False

    async def backend_cycle(self, *, force: bool = False) -> None:
        await self._guard("backend_cycle", self._backend_cycle, force)

    async def download_cycle(self, *, force: bool = False) -> None:
        await self._guard("download_cycle", self._download_cycle, force)

    async def reap(self) -> None:
        await self._guard("reaper", self._reap, False)

    def request(self) -> None:
        """Ask for a backend cycle now; requests made while one runs, or before the rate
        limit's window ends, coalesce into one more at the window's end."""
        self._kick.set()

    async def serve_requests(self) -> None:
        """Run requested cycles until cancelled (a task of its own, beside the scheduler), at
        most one start per ``min_interval_s``."""
        while True:
            await self._kick.wait()
            wait_s = self._throttle.wait_s(self._clock())
            if wait_s > 0:  # the rate limit's window: later requests join this run
                await asyncio.sleep(wait_s)
            self._kick.clear()
            self._throttle.started(self._clock())
            await self.backend_cycle(force=True)
            await self.download_cycle(force=True)

    async def _backend_cycle(self) -> None:
        report = await self._state.run_backend_cycle()
        self._metrics.observe_cycle(report)

    async def _download_cycle(self) -> None:
        async with self._downloads:
            await self._state.run_download_cycle()
        self._metrics.cycles.labels(kind="download_cycle", outcome="ok").inc()

    async def _reap(self) -> None:
        await self._state.heartbeat()  # this replica is alive: ``llmctl status`` shows it
        await self._state.downloads.reap()  # publishes through the same sink
        column = schema.download_jobs.c.state
        async with self._engine.connect() as connection:
            result = await connection.execute(sa.select(column, sa.func.count()).group_by(column))
            self._metrics.set_downloads({str(s): int(n) for s, n in result.all()})

    async def _guard(self, kind: str, work: Callable[[], Awaitable[None]], force: bool) -> None:
        backing_off = not force and self._clock() < self._resume_at.get(kind, 0.0)
        if backing_off and not await self._database_back(kind):
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            with database.guarded():  # an outage anywhere in the work is one error
                await work()
        except asyncio.CancelledError:
            if self._closing:  # stopped on purpose: not a failure for the scheduler to log
                return
            raise
        except Exception as exc:  # anything: the scheduler must survive it
            self._failed(kind, exc)
        else:
            if self._failures.pop(kind, 0):
                log.info("recovered", work=kind)
            self._resume_at.pop(kind, None)
            self._outage.pop(kind, None)
        finally:
            if task is not None:
                self._tasks.discard(task)

    def _failed(self, kind: str, exc: Exception) -> None:
        failures = self._failures.get(kind, 0) + 1
        self._failures[kind] = failures
        delay = backoff.exponential(FAILURE_BACKOFF, failures)
        self._resume_at[kind] = self._clock() + delay
        self._metrics.failed(kind)
        expected = isinstance(exc, errors.DatabaseUnavailable | sa.exc.DBAPIError)
        if expected:
            self._outage.setdefault(kind, False)
        log.warning(
            "work failed; retrying later",
            work=kind,
            error=f"{type(exc).__name__}: {database.describe(exc)}",
            failures=failures,
            retry_in_s=round(delay, 1),
            exc_info=not expected,  # unexpected errors keep their traceback
        )

    async def _database_back(self, kind: str) -> bool:
        """Whether ``kind``, backing off after a database error, may run before its backoff
        ends: a probe found the database down since, and this one finds it answering. A
        database that answers without having been seen down (the error was a query's, not an
        outage) leaves the backoff as it is."""
        if kind not in self._outage:
            return False
        if not await self._database_answers():
            self._outage[kind] = True
            return False
        if not self._outage[kind]:
            return False
        self._outage[kind] = False  # should it fail again, only a new outage lifts the backoff
        log.info("database answers again; resuming", work=kind)
        return True

    async def _database_answers(self) -> bool:
        async def probe() -> None:
            async with self._engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))

        try:
            with database.guarded():
                await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
        except (TimeoutError, errors.DatabaseUnavailable, sa.exc.DBAPIError):
            return False
        return True

    async def cancel_running(self, timeout_s: float) -> None:
        """Cancel the cycles in flight and wait (at most ``timeout_s``) for them to end."""
        self._closing = True
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

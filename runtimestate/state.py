"""`State`: the runtime of llmctl, with its two cycles and the current snapshot.

Built once by the composition root (``serve``, ``reconcile --once``, tests) with an engine and
an optional event sink, and driven from outside: an APScheduler loop (or a test) calls
`run_backend_cycle` and `run_download_cycle`; applications call `get`. Every cycle is a
stateless pass over the database; what `State` keeps between cycles is only caches (adapters,
probe backoff) and the last snapshot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from dwqueue import jobs, queue
from runtimestate import clock, database, desired, downloads, snapshot
from runtimestate.backends import adapters, base
from runtimestate.desired import selectors, store
from runtimestate.reconcile import cycle, failures, recording, refreshes, replicas

T = TypeVar("T")
DesiredState = desired.DesiredState  # `State.desired` hides the module inside the class


@dataclasses.dataclass(frozen=True)
class Settings:
    timeouts: base.Timeouts = dataclasses.field(default_factory=base.Timeouts)
    downloads: downloads.Settings = dataclasses.field(default_factory=downloads.Settings)
    cycle: cycle.Settings = dataclasses.field(default_factory=cycle.Settings)
    # How often a long-running replica (``serve``) calls `State.heartbeat`; None for a one-off
    # process (``reconcile --once``), which records its cycles but is never "running".
    heartbeat_s: float | None = None


STALE_AFTER_BEATS = 3  # a replica that missed this many heartbeats is no longer running


def default_owner() -> str:
    """A lease owner unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class State:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sink: recording.MessageSink | None = None,
        settings: Settings = Settings(),
        environ: Mapping[str, str] | None = None,
        owner: str | None = None,
        clock: clock.Clock = clock.SYSTEM,
    ) -> None:
        """``clock`` is the time both cycles decide by; composition roots keep the system's,
        tests pass a `clock.FakeClock` to move past grace periods and backoff at once."""
        self._sessions = database.session_factory(engine)
        self._pool = adapters.AdapterPool(
            settings.timeouts, environ if environ is not None else os.environ
        )
        self.owner = owner or default_owner()
        self._refreshes = refreshes.Refreshes(self.refresh_backend)
        self.downloads = downloads.Downloads(
            self._sessions,
            self._pool,
            owner=self.owner,
            sink=sink,
            settings=settings.downloads,
            on_end=self._refreshes.request,
            clock=clock,
        )
        self._backends = cycle.BackendCycle(
            self._sessions, self._pool, sink=sink, settings=settings.cycle, clock=clock
        )
        self._snapshot = snapshot.EMPTY
        self._desired: DesiredState | None = None
        self._clock = clock
        beats = settings.heartbeat_s
        self._identity = replicas.Identity(
            self.owner,
            replicas.ONCE if beats is None else replicas.SERVE,
            clock.now(),
            None if beats is None else beats * STALE_AFTER_BEATS,
        )

    async def _tx(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return await database.transaction(self._sessions, work)

    async def desired(self) -> desired.DesiredState:
        """The whole desired state, read in one transaction."""
        return await database.read_snapshot(self._sessions, store.load)

    async def run_download_cycle(self) -> downloads.CycleReport:
        """Reap expired leases, claim due downloads and start them; returns without waiting.

        Raises only when the database cannot be used.
        """
        return await self.downloads.run_cycle(await self.desired())

    async def run_backend_cycle(
        self, *, dry_run: bool = False, selector: selectors.Selector = selectors.EVERYTHING
    ) -> cycle.Report:
        """Observe every backend, plan, apply (unless ``dry_run``) and swap in the new snapshot.

        With a non-empty ``selector`` only the backends whose labels match are observed,
        planned, acted on and written, and the snapshot is not swapped (it would lack the
        others). Raises only when the desired state cannot be read; two cycles never overlap.
        """
        report = await self._backends.run(dry_run=dry_run, selector=selector)
        if not dry_run and not selector:
            self._snapshot = report.snapshot  # one reference swap: readers see old or new
            self._desired = report.desired
            await self._record_cycle(report)
        return report

    async def _record_cycle(self, report: cycle.Report) -> None:
        """Record the cycle in the replica record; a failure is logged, never raised."""
        started = self._clock.now() - dt.timedelta(seconds=report.duration_s)

        async def write(session: AsyncSession) -> None:
            await replicas.record_cycle(
                session, self._identity, report.cycle, started, report.duration_s
            )

        try:
            await self._tx(write)
        except Exception as exc:  # logged by failures.logged; the next cycle records again
            failures.logged("recording the cycle", exc, cycle=report.cycle)

    async def heartbeat(self) -> None:
        """Record that this replica is alive now (``serve`` calls it on a timer). Raises
        `errors.DatabaseUnavailable` when the database cannot be used."""
        now = self._clock.now()
        await self._tx(lambda s: replicas.beat(s, self._identity, now))

    async def refresh_backend(self, name: str) -> snapshot.LLMState | None:
        """Bring one backend's status up to date now, observing it alone: its row, its
        ``llmctl.v1.state.<backend>`` event and this process's snapshot. The download worker asks
        for it when a pull ends (see `runtimestate.reconcile.refreshes`); it waits for a running
        backend cycle. None when the backend is not declared or nothing was written (a newer status
        is stored, or the database failed: logged)."""
        refreshed = await self._backends.refresh(name)
        current = self._snapshot
        if refreshed is not None and name in current.backends:
            backends = {**current.backends, name: refreshed}
            self._snapshot = snapshot.Snapshot(backends, current.cycle, current.taken_at)
        return refreshed

    async def settled(self) -> None:
        """Wait until every pull this process runs has ended and its refresh is done."""
        await self.downloads.drain()
        await self._refreshes.drain()

    async def active_jobs(self) -> list[jobs.Job]:
        """Downloads queued or running anywhere (every replica), oldest first."""
        active = [jobs.JobState.QUEUED, jobs.JobState.RUNNING]
        return await self._tx(lambda s: queue.list_jobs(s, states=active))

    def get(self) -> snapshot.Snapshot:
        """The latest snapshot: immutable, shared, swapped atomically after each cycle."""
        return self._snapshot

    def last_desired(self) -> DesiredState | None:
        """The desired state the latest backend cycle read (None before the first)."""
        return self._desired

    async def aclose(self) -> None:
        """Interrupt running pulls (their jobs go back to the queue) and close adapters; a
        replica that beats is recorded as stopped (best effort: else its heartbeat goes stale)."""
        await self.downloads.stop()
        if self._identity.stale_after_s is not None:
            try:
                await self._tx(lambda s: replicas.stopped(s, self.owner))
            except Exception as exc:  # logged; the heartbeat goes stale by itself
                failures.logged("recording the stop", exc, owner=self.owner)
        await self._refreshes.aclose()
        await self._backends.aclose()
        await self._pool.aclose()

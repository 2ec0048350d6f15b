"""The backend cycle: read everything, observe every backend, plan, act, record the status.

Called by `State.run_backend_cycle` (from the scheduler, a NATS trigger or ``llmctl
reconcile``). One stateless pass, level-triggered like a Kubernetes controller:

1. read the desired state, the jobs and the managed record in a fixed number of queries;
2. observe every due backend (`runtimestate.reconcile.observation`: concurrent, bounded, under
   one cycle deadline; a failing backend backs off and keeps its last good list for a grace
   period);
3. plan with the pure `runtimestate.reconcile.plan`;
4. apply the plan (`runtimestate.reconcile.execution`): queue pulls and cancellations, prune;
5. write each backend's state where it changed and publish it and a cycle summary
   (`runtimestate.reconcile.recording`), and log one canonical line.

`refresh` is the same pass for one backend when a download on it ended: steps 1, 2, 3 and 5
for that backend alone, applying nothing, under the same lock as the cycle. A pass given a label
selector (``llmctl reconcile --once -l``) is steps 1 to 5 for the backends whose labels match:
what it read is cut down to them (their jobs, their status) before anything else, so the others
are neither observed, planned, acted on nor written, and nothing of them is forgotten.

It raises only when the desired state cannot be read: a step that fails later is logged in one
line (`runtimestate.reconcile.failures`) and the next cycle catches up. Between cycles it keeps,
to make a steady fleet cost O(backends) rather than O(backends x models), the last plan and the
per-backend views and states (`runtimestate.reconcile.reuse`), reused only where their inputs
did not change. Reading is its own I/O; it must not probe, queue, prune, write the status or
publish itself: each of those belongs to its phase's module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import random
import time  # durations of real work, for the log; decisions read `self._clock`
from collections.abc import Callable, Mapping, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import jobs
from runtimestate import backends, clock, database, desired, snapshot
from runtimestate.backends import adapters, registry
from runtimestate.desired import names, selectors, spec
from runtimestate.reconcile import (
    capacity,
    conditions,
    execution,
    failures,
    observation,
    plan,
    planview,
    probing,
    reading,
    recording,
    refusals,
    reuse,
    rolling,
    steps,
    upgrades,
    upgradewatch,
)

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Settings:
    concurrency: int = 64  # backends observed at once
    deadline_s: float = 30.0  # the whole observation phase
    probing: probing.Policy = dataclasses.field(default_factory=probing.Policy)
    prefix: str = "llmctl"
    registry_url: str | None = registry.DEFAULT_URL  # model sizes for admission; None: none
    upgrades: upgradewatch.Settings | None = None  # issue 19's checks upstream; None: none


@dataclasses.dataclass(frozen=True)
class Report:
    cycle: int
    dry_run: bool
    duration_s: float
    plan: plan.Plan
    outcomes: tuple[execution.Outcome, ...]
    snapshot: snapshot.Snapshot
    observed: int
    skipped: int
    unobserved: int = 0  # due, but the deadline passed before a slot freed: state kept
    status_written: bool = True
    desired: desired.DesiredState | None = None  # what the cycle read (credentials, in-process)
    selector: selectors.Selector = selectors.EVERYTHING  # the backends this pass was given

    def summary(self) -> dict[str, object]:
        phases = [s.phase.value for s in self.snapshot.backends.values()]
        return {
            "cycle": self.cycle,
            "dry_run": self.dry_run,
            "duration_s": round(self.duration_s, 3),
            "backends": len(phases),
            "observed": self.observed,
            "skipped_backoff": self.skipped,
            "unobserved_deadline": self.unobserved,
            **{phase.value.lower(): phases.count(phase.value) for phase in snapshot.Phase},
            "pulls": self._pulls(),
            "prunes": len(self.plan.of(steps.Prune)),
            "cancels": len(self.plan.of(steps.CancelJob)),
            "starts": len(self.plan.of(steps.StartInstance)),
            "restarts": len(self.plan.of(steps.RestartInstance)),
            "stops": len(self.plan.of(steps.StopInstance)),
            "preloads": len(self.plan.of(steps.Preload)),
            "unloads": len(self.plan.of(steps.Unload)),
            "adapter_loads": len(self.plan.of(steps.LoadAdapter)),
            "adapter_unloads": len(self.plan.of(steps.UnloadAdapter)),
            "holds": len(self.plan.of(steps.Hold)),
            "drift": len(self.plan.of(steps.ReportDrift)),
            "failed_actions": sum(not o.ok and not o.skipped for o in self.outcomes),
            "skipped_locked": sum(o.skipped for o in self.outcomes),
            "status_written": self.status_written,
            **({"selector": str(self.selector)} if self.selector else {}),
        }

    def _pulls(self) -> int:
        """Pulls this cycle queued: those it planned in a dry run, else those whose job its
        own insert created (so replicas planning the same pull count it once between them)."""
        if self.dry_run:
            return len(self.plan.of(steps.Pull))
        return sum(o.created for o in self.outcomes if isinstance(o.action, steps.Pull))


class BackendCycle:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pool: adapters.AdapterPool,
        *,
        sink: recording.MessageSink | None = None,
        settings: Settings = Settings(),
        rng: random.Random | None = None,
        clock: clock.Clock = clock.SYSTEM,
    ) -> None:
        """``clock`` gives every instant the cycle decides by (grace, backoff, ``last_ok_at``,
        status timestamps); the observation deadline stays on the event loop's clock."""
        self._sessions = sessions
        self._clock = clock
        self._settings = settings
        self._observer = observation.Observer(
            pool,
            concurrency=settings.concurrency,
            deadline_s=settings.deadline_s,
            policy=settings.probing,
            rng=rng or random.Random(),  # noqa: S311 - probe jitter, not cryptography
        )
        self._executor = execution.Executor(sessions, pool, sink=sink, clock=clock)
        self._recorder = recording.Recorder(sessions, sink, settings.prefix)
        self._pool = pool
        self._reuse = reuse.Reuse()
        self._refusals = refusals.Refusals()
        self._capacity = capacity.Lookup.built(settings.registry_url, pool, clock)
        self._upgrades = upgradewatch.Watch.built(sessions, settings.upgrades)
        self._rolling = rolling.Rolling(sessions, self._upgrades) if self._upgrades else None
        self._plan: plan.Plan | None = None
        self._cycle = 0
        self._lock = asyncio.Lock()

    async def run(
        self, *, dry_run: bool = False, selector: selectors.Selector = selectors.EVERYTHING
    ) -> Report:
        """One pass (over the backends whose labels match ``selector``); never two at once in
        this process. Raises only if reading fails."""
        async with self._lock:
            return await self._run(dry_run, selector)

    async def aclose(self) -> None:
        """Close the registry's connections (admission's size lookups, upgrade checks)."""
        await self._capacity.aclose()
        if self._upgrades is not None:
            await self._upgrades.aclose()

    async def refresh(self, name: str) -> snapshot.LLMState | None:
        """Bring one backend's status up to date now, as when a download on it ended: read,
        observe that backend alone, rebuild its state from a plan of it alone (nothing is
        applied), write it where it changed and publish it. Holds the cycle's lock, so it
        never interleaves with a cycle: the later one observed later and its state wins; and
        the write gives way to a status another replica observed after this one began.

        Returns the state (None when the backend is not declared, or the read or the write
        failed: logged, the next cycle catches up). Raises nothing but a cancellation.
        """
        async with self._lock:
            started = time.monotonic()
            try:
                read = await database.read_snapshot(self._sessions, self._read)
            except Exception as exc:  # logged by failures.logged: the next cycle catches up
                failures.logged("reading for a status refresh", exc, backend=name)
                return None
            backend = read.desired.backend(name)
            if backend is None:
                return None
            self._match_records(read)
            now = self._clock.now()
            fresh = await self._observer.probe(backend, now)
            mine = [j for j in read.jobs if j.backend == name]
            view = self._view(read, backend, now, fresh)
            view = (await self._admitted([backend], {name: view}, mine, now)).get(name, view)
            decided = plan.compute(
                [view], jobs=[planview.JobView.of(j) for j in mine], managed=read.managed,
                desired_complete=read.complete,
                lora=self._refusals.records({name: view}, read.adapters, self._version(now), now),
            )  # fmt: skip
            state = self._state(read.desired, backend, decided, mine, view, now)
            if self._upgrades is not None:  # what the cycles learnt, without asking again
                state = upgrades.marked({name: state}, self._upgrades.known())[name]
            written = await self._recorder.record_refresh(state, read.previous.get(name), now)
            log.info("status_refresh", backend=name, phase=state.phase.value, answered=fresh,
                     written=written, duration_s=round(time.monotonic() - started, 3))  # fmt: skip
            return state if written else None

    async def _run(self, dry_run: bool, selector: selectors.Selector) -> Report:
        started = time.monotonic()
        self._cycle += 1
        read = await database.read_snapshot(self._sessions, self._read)
        if selector:
            read = reading.selected(read, selector)
        now = self._clock.now()
        backends = read.desired.backends
        self._match_records(read)
        due = [b for b in backends if self._observer.record(b.name).due(now)]
        seen = await self._observer.observe(due, now)
        views = {b.name: self._view(read, b, now, b.name in seen.fresh) for b in backends}
        views.update(await self._admitted(backends, views, read.jobs, now))
        usable = lambda n: self._observer.record(n).usable(now, self._settings.probing)  # noqa: E731
        if self._upgrades is not None:  # upgrades (issue 19): what upstream has, then roll
            await self._upgrades.look(views, usable, now, ask=not dry_run)
        decided = plan.compute(
            views.values(),
            jobs=[planview.JobView.of(j) for j in read.jobs],
            managed=read.managed,
            desired_complete=read.complete,
            previous=self._plan,
            lora=self._refusals.records(views, read.adapters, self._version(now), now),
        )
        if self._rolling is not None:
            decided = await self._rolling.planned(decided, views, usable, read, dry_run=dry_run)
        self._plan = decided
        outcomes: tuple[execution.Outcome, ...] = ()
        if not dry_run:
            outcomes = await self._executor.apply(decided, read.desired)
            self._refusals.note(outcomes, self._version(now), now)
            read = await self._reread_jobs(read)
        states = self._states(
            read, decided, views, now, forget=not selector, refused=execution.refused(outcomes)
        )
        if self._upgrades is not None:
            states = self._upgrades.marked(states)
        taken = snapshot.Snapshot(states, self._cycle, now)
        written = True
        if not dry_run:
            written = await self._recorder.record_states(states, read.previous, now)
            if selector:
                self._recorder.forget()
            else:
                await self._pool.retain(states)
        report = Report(
            self._cycle, dry_run, time.monotonic() - started, decided, outcomes, taken,
            observed=len(seen.started), skipped=len(backends) - len(due),
            unobserved=len(due) - len(seen.started), status_written=written,
            desired=read.desired, selector=selector,
        )  # fmt: skip
        await self._recorder.publish_summary(report.summary())
        log.info("backend_cycle", **report.summary())
        return report

    async def _read(self, session: AsyncSession) -> reading.Read:
        """Everything a cycle reads, on one snapshot; raises what the database raises."""
        return await reading.read(session, self._recorder.previous)

    def _version(self, now: dt.datetime) -> Callable[[str], str | None]:
        return refusals.versions(self._observer, now, self._settings.probing)

    def _match_records(self, read: reading.Read) -> None:
        """After a read of the persisted status, the observer resumes from it what it lacks."""
        self._observer.match(read.desired.backends, read.previous if read.loaded else {})

    def _view(
        self, read: reading.Read, backend: spec.Backend, now: dt.datetime, fresh: bool
    ) -> planview.BackendView:
        usable = self._observer.record(backend.name).usable(now, self._settings.probing)
        # Only what answered this cycle is acted on; a kept list (failing, backing off, not
        # reached before the deadline, resumed from the persisted status) is only reported.
        pending: frozenset[str] = frozenset()
        if self._executor.pending.holds(backend.name):  # rare: no per-model work otherwise
            kind, models = backend.spec.type, usable.models if usable and fresh else ()
            loaded = {names.key(m.name, kind) for m in models if m.loaded}
            pending = self._executor.pending.of(backend.name, loaded, now)
        preloaded = read.preloaded.get(backend.name, frozenset())
        return self._reuse.view(read.desired, backend, usable, not fresh, preloaded, pending)

    async def _admitted(
        self, backends: Sequence[spec.Backend], views: Mapping[str, planview.BackendView],
        found: Sequence[jobs.Job], now: dt.datetime,
    ) -> dict[str, planview.BackendView]:  # fmt: skip
        """The views of backends with a declared disk, with their capacity (issue 16)."""
        record, policy = self._observer.record, self._settings.probing
        usable = capacity.needs(backends, views, lambda n: record(n).usable(now, policy), found)
        return await self._capacity.views(usable)

    async def _reread_jobs(self, read: reading.Read) -> reading.Read:
        """The jobs after applying, for the status; the ones read before if that fails."""
        try:
            return dataclasses.replace(
                read, jobs=await database.transaction(self._sessions, reading.jobs_of)
            )
        except Exception as exc:  # logged by failures.logged; the status is older
            failures.logged("re-reading the jobs", exc)
            return read

    def _states(
        self,
        read: reading.Read,
        decided: plan.Plan,
        views: Mapping[str, planview.BackendView],
        now: dt.datetime,
        *,
        forget: bool = True,
        refused: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, snapshot.LLMState]:
        by_backend: dict[str, list[jobs.Job]] = {}
        for job in read.jobs:
            by_backend.setdefault(job.backend, []).append(job)
        states = {
            backend.name: self._state(
                read.desired, backend, decided, by_backend.get(backend.name, ()),
                views[backend.name], now, (refused or {}).get(backend.name, {}),
            )
            for backend in read.desired.backends
        }  # fmt: skip
        if forget:  # backends not in ``states`` are gone (a selective pass only left them out)
            self._observer.retain(states)
            self._reuse.retain(states)
            self._capacity.retain(states)
        return states

    def _state(
        self,
        state: desired.DesiredState,
        backend: spec.Backend,
        decided: plan.Plan,
        backend_jobs: Sequence[jobs.Job],
        view: planview.BackendView,
        now: dt.datetime,
        refused: Mapping[str, str] | None = None,
    ) -> snapshot.LLMState:
        """One backend's state after this pass (the one kept by `reuse`, when no input changed);
        ``refused``: the instance starts its node agent refused in this pass, by model."""
        policy = self._settings.probing
        record = self._observer.record(backend.name)
        inputs = conditions.Inputs(
            backend=backend,
            record=record,
            usable=record.usable(now, policy),
            actions=decided.for_backend(backend.name).actions,
            jobs=backend_jobs,
            observed_generation=self._observer.generation(backend.name),
            overrides=self._reuse.overrides(state.overrides(backend.spec.type)),
            refused=refused or {},
        )
        return self._reuse.state(
            inputs,
            record.phase(now, policy),
            view,
            functools.partial(_build, state, inputs, now, policy),
        )


def _build(
    state: desired.DesiredState,
    inputs: conditions.Inputs,
    now: dt.datetime,
    policy: probing.Policy,
) -> snapshot.LLMState:
    """`conditions.build` with the backend's desired models filled in."""
    declared = state.models_for(inputs.backend.name)
    wanted = tuple(m.name for m in declared)
    warm: tuple[str, ...] = ()  # warm models, where the backend can keep them loaded
    if backends.capabilities(inputs.backend.spec.type).can_preload:
        warm = tuple(m.name for m in declared if m.spec.warm)
    placed = tuple(a.name for a in state.adapters_for(inputs.backend.name))
    filled = dataclasses.replace(inputs, desired=wanted, warm=warm, adapters=placed)
    return conditions.build(filled, now, policy)

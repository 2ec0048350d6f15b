"""The backend cycle: read everything, observe every backend, plan, act, record the status.

Called by `State.run_backend_cycle` (from the scheduler, a NATS trigger or ``llmctl
reconcile``). One stateless pass, level-triggered like a Kubernetes controller:

1. read the desired state, the jobs and the managed record in a fixed number of queries;
2. observe every due backend concurrently, bounded by a semaphore, each call under the
   adapter's timeouts and all of them under one cycle deadline (a hung node costs one
   timeout, never the cycle); a failing backend backs off and keeps its last good list for a
   grace period (`runtimestate.probing`);
3. plan with the pure `runtimestate.plan`;
4. apply: enqueue pulls and cancel jobs in one transaction, prune through the adapters;
5. write each backend's state where it changed, publish it and a cycle summary on NATS, and
   log one canonical line.

It raises only when the desired state cannot be read. What it keeps between cycles is the
probe records, the last states (to write and publish only changes) and, to make a steady
fleet cost O(backends) rather than O(backends x models), the last plan and the per-backend
views and states (`runtimestate.memo`), reused only where their inputs did not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import events, jobs, queue, rows
from runtimestate import (
    adapters,
    conditions,
    database,
    desired,
    errors,
    locks,
    memo,
    plan,
    planview,
    probing,
    snapshot,
    spec,
    status,
    store,
)
from runtimestate.backends import base

log = structlog.get_logger(__name__)
T = TypeVar("T")
Record = probing.Record[base.Observation]


class MessageSink(Protocol):
    """Where a cycle's news goes after commit (`dwqueue.publisher.Publisher`); never raises."""

    async def publish(self, event: events.DownloadEvent) -> bool: ...

    async def publish_message(self, subject: str, payload: bytes) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Settings:
    concurrency: int = 64  # backends observed at once
    deadline_s: float = 30.0  # the whole observation phase
    probing: probing.Policy = dataclasses.field(default_factory=probing.Policy)
    prefix: str = "llmctl"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one action when the cycle applied it."""

    action: plan.Action
    ok: bool
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Report:
    cycle: int
    dry_run: bool
    duration_s: float
    plan: plan.Plan
    outcomes: tuple[Outcome, ...]
    snapshot: snapshot.Snapshot
    observed: int
    skipped: int

    def summary(self) -> dict[str, object]:
        phases = [s.phase.value for s in self.snapshot.backends.values()]
        return {
            "cycle": self.cycle,
            "dry_run": self.dry_run,
            "duration_s": round(self.duration_s, 3),
            "backends": len(phases),
            "observed": self.observed,
            "skipped_backoff": self.skipped,
            **{phase.value.lower(): phases.count(phase.value) for phase in probing.Phase},
            "pulls": len(self.plan.of(plan.Pull)),
            "prunes": len(self.plan.of(plan.Prune)),
            "cancels": len(self.plan.of(plan.CancelJob)),
            "holds": len(self.plan.of(plan.Hold)),
            "drift": len(self.plan.of(plan.ReportDrift)),
            "failed_actions": sum(not o.ok for o in self.outcomes),
        }


@dataclasses.dataclass(frozen=True)
class _Read:
    desired: desired.DesiredState
    jobs: tuple[jobs.Job, ...]
    managed: frozenset[tuple[str, str]]
    previous: Mapping[str, snapshot.LLMState] | None


class BackendCycle:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pool: adapters.AdapterPool,
        *,
        sink: MessageSink | None = None,
        settings: Settings = Settings(),
        rng: random.Random | None = None,
    ) -> None:
        self._sessions = sessions
        self._pool = pool
        self._sink = sink
        self._settings = settings
        self._rng = rng or random.Random()  # noqa: S311 - probe jitter, not cryptography
        self._records: dict[str, Record] = {}
        self._previous: dict[str, snapshot.LLMState] | None = None
        self._generations: dict[str, int] = {}
        self._memo = memo.Memo()
        self._plan: plan.Plan | None = None
        self._cycle = 0
        self._lock = asyncio.Lock()

    async def _tx(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with self._sessions() as session, session.begin():
            return await work(session)

    async def run(self, *, dry_run: bool = False) -> Report:
        """One pass; never two at once in this process. Raises only if reading fails."""
        async with self._lock:
            return await self._run(dry_run)

    async def _run(self, dry_run: bool) -> Report:
        started = time.monotonic()
        self._cycle += 1
        read = await database.read_snapshot(self._sessions, self._read)
        now = dt.datetime.now(dt.UTC)
        backends = read.desired.backends
        due = [b for b in backends if self._record(b.name).due(now)]
        await self._observe(due, now)
        views = {b.name: self._view(read.desired, b, now) for b in backends}
        decided = plan.compute(
            views.values(),
            jobs=[planview.JobView.of(j) for j in read.jobs],
            managed=read.managed,
            previous=self._plan,
        )
        self._plan = decided
        outcomes: tuple[Outcome, ...] = ()
        if not dry_run:
            outcomes = await self._apply(decided, read.desired)
            read = dataclasses.replace(read, jobs=await self._tx(_jobs))
        states = self._states(read, decided, views, now)
        taken = snapshot.Snapshot(states, self._cycle, now)
        if not dry_run:
            await self._record_states(states, read.previous, now)
            await self._pool.retain(states)
        report = Report(
            self._cycle, dry_run, time.monotonic() - started, decided, outcomes, taken,
            observed=len(due), skipped=len(backends) - len(due),
        )  # fmt: skip
        await self._publish(
            f"{self._settings.prefix}.v1.cycles", json.dumps(report.summary()).encode()
        )
        log.info("backend_cycle", **report.summary())
        return report

    async def _read(self, session: AsyncSession) -> _Read:
        previous = self._previous
        if previous is None:
            previous = await status.load_states(session)
        return _Read(
            await store.load(session), await _jobs(session), await status.managed(session), previous
        )

    def _record(self, name: str) -> Record:
        return self._records.setdefault(name, probing.Record())

    async def _observe(self, due: Sequence[spec.Backend], now: dt.datetime) -> None:
        semaphore = asyncio.Semaphore(self._settings.concurrency)

        async def probe(backend: spec.Backend) -> None:
            async with semaphore:
                await self._probe(backend, now)

        tasks = [asyncio.create_task(probe(b), name=b.name) for b in due]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self._settings.deadline_s)
        for task in late:
            task.cancel()
            name = task.get_name()
            self._records[name] = probing.failed(
                self._record(name), "the cycle deadline passed before it answered", "timeout",
                now, self._settings.probing, self._rng,
            )  # fmt: skip
        if late:
            await asyncio.wait(late)

    async def _probe(self, backend: spec.Backend, now: dt.datetime) -> None:
        record = self._record(backend.name)
        try:
            observation = await self._pool.get(backend.spec).observe()
        except errors.LlmctlError as exc:
            self._records[backend.name] = probing.failed(
                record, exc.detail, exc.reason.value, now, self._settings.probing, self._rng
            )
            return
        except Exception as exc:  # unexpected: logged with its traceback, treated as temporary
            log.exception("observation failed unexpectedly", backend=backend.name)
            self._records[backend.name] = probing.failed(
                record,
                f"{type(exc).__name__}: {exc}",
                "unexpected",
                now,
                self._settings.probing,
                self._rng,
            )
            return
        self._records[backend.name] = probing.succeeded(record, observation, now)
        self._generations[backend.name] = backend.meta.generation

    def _view(
        self, state: desired.DesiredState, backend: spec.Backend, now: dt.datetime
    ) -> planview.BackendView:
        record = self._record(backend.name)
        usable = record.usable(now, self._settings.probing)
        return self._memo.view(state, backend, usable, stale=record.failures > 0)

    async def _apply(self, decided: plan.Plan, state: desired.DesiredState) -> tuple[Outcome, ...]:
        queued = [a for a in decided.actions if isinstance(a, plan.Pull | plan.CancelJob)]
        outcomes: list[Outcome] = []
        if queued:
            outcomes, changes = await self._tx(lambda s: _queue_actions(s, queued))
            if self._sink is not None:
                for change in changes:
                    if change is not None and change.event is not None:
                        await self._sink.publish(change.event)
        by_backend: dict[str, list[plan.Prune]] = {}
        for prune in decided.of(plan.Prune):
            by_backend.setdefault(prune.backend, []).append(prune)
        for done in await asyncio.gather(
            *(self._prune_locked(name, prunes, state) for name, prunes in by_backend.items())
        ):
            outcomes += done
        return tuple(outcomes)

    async def _prune_locked(
        self, name: str, prunes: Sequence[plan.Prune], state: desired.DesiredState
    ) -> list[Outcome]:
        """Prune under the backend's advisory lock: replicas never delete from one at once."""
        async with locks.backend_lock(self._sessions, name) as acquired:
            if not acquired:
                return [
                    Outcome(p, False, "another replica is acting on this backend") for p in prunes
                ]
            return list(await asyncio.gather(*(self._prune(p, state) for p in prunes)))

    async def _prune(self, action: plan.Prune, state: desired.DesiredState) -> Outcome:
        backend = state.backend(action.backend)
        assert backend is not None
        adapter = self._pool.get(backend.spec)
        try:
            if not isinstance(adapter, base.Deleter):
                return Outcome(action, False, "this backend cannot delete models")
            with contextlib.suppress(errors.ModelNotFound):  # already gone: goal reached
                await adapter.delete(action.model)
        except errors.LlmctlError as exc:
            return Outcome(action, False, f"{exc.reason.value}: {exc.detail}")
        key = planview.key(action.model, backend.spec.type)
        await self._tx(lambda s: status.forget(s, action.backend, [key]))
        return Outcome(action, True)

    def _states(
        self,
        read: _Read,
        decided: plan.Plan,
        views: Mapping[str, planview.BackendView],
        now: dt.datetime,
    ) -> dict[str, snapshot.LLMState]:
        policy = self._settings.probing
        by_backend: dict[str, list[jobs.Job]] = {}
        for job in read.jobs:
            by_backend.setdefault(job.backend, []).append(job)
        states = {}
        for backend in read.desired.backends:
            name = backend.name
            record = self._record(name)
            inputs = conditions.Inputs(
                backend=backend,
                record=record,
                usable=record.usable(now, policy),
                actions=decided.for_backend(name).actions,
                jobs=by_backend.get(name, ()),
                observed_generation=self._generations.get(name, 0),
            )
            states[name] = self._memo.state(
                inputs,
                record.phase(now, policy),
                views[name],
                functools.partial(_build, read.desired, inputs, now, policy),
            )
        for name in [n for n in self._records if n not in states]:
            del self._records[name]
        self._memo.retain(states)
        return states

    async def _record_states(
        self,
        states: dict[str, snapshot.LLMState],
        previous: Mapping[str, snapshot.LLMState] | None,
        now: dt.datetime,
    ) -> None:
        before = previous or {}
        gone = [name for name in before if name not in states]

        async def write(session: AsyncSession) -> list[str]:
            changed = await status.write_states(session, states, before, now)
            await status.forget_backends(session, gone)
            return changed

        changed = await self._tx(write)
        self._previous = dict(states)
        if self._sink is None:
            return  # nothing to publish to: do not encode 1,000 states for nobody
        for name in changed:
            await self._publish(
                f"{self._settings.prefix}.v1.state.{name}", snapshot.to_wire(states[name])
            )

    async def _publish(self, subject: str, payload: bytes) -> None:
        if self._sink is not None:
            await self._sink.publish_message(subject, payload)


def _build(
    state: desired.DesiredState,
    inputs: conditions.Inputs,
    now: dt.datetime,
    policy: probing.Policy,
) -> snapshot.LLMState:
    """`conditions.build` with the backend's desired models and their declared overrides."""
    declared = state.models_for(inputs.backend.name)
    kind = inputs.backend.spec.type
    return conditions.build(
        dataclasses.replace(
            inputs,
            desired=tuple(m.name for m in declared),
            overrides={planview.key(m.name, kind): m.spec for m in declared},
        ),
        now,
        policy,
    )


async def _jobs(session: AsyncSession) -> tuple[jobs.Job, ...]:
    """The newest job of every (backend, model) plus every active one, deduplicated."""
    latest = await queue.latest(session)
    active = await queue.list_jobs(session, states=[jobs.JobState.QUEUED, jobs.JobState.RUNNING])
    found = {job.id: job for job in (*latest.values(), *active)}
    return tuple(found.values())


async def _queue_actions(
    session: AsyncSession, actions: Sequence[plan.Action]
) -> tuple[list[Outcome], list[rows.Change | None]]:
    outcomes: list[Outcome] = []
    changes: list[rows.Change | None] = []
    for action in actions:
        if isinstance(action, plan.Pull):
            changes.append(
                await queue.enqueue(
                    session,
                    action.backend,
                    action.model,
                    model_key=action.model_key,
                    declaration=action.declaration,
                )
            )
        elif isinstance(action, plan.CancelJob):
            changes.append(await queue.cancel(session, action.job_id, reason=action.reason.text))
        outcomes.append(Outcome(action, True))
    return outcomes, changes

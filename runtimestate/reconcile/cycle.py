"""The backend cycle: read everything, observe every backend, plan, act, record the status.

Called by `State.run_backend_cycle` (from the scheduler, a NATS trigger or ``llmctl
reconcile``). One stateless pass, level-triggered like a Kubernetes controller:

1. read the desired state, the jobs and the managed record in a fixed number of queries;
2. observe every due backend concurrently, bounded by a semaphore, each call under the
   adapter's timeouts and all of them under one cycle deadline (a hung node costs one
   timeout, never the cycle); a failing backend backs off and keeps its last good list for a
   grace period (`runtimestate.reconcile.probing`);
3. plan with the pure `runtimestate.reconcile.plan`;
4. apply: enqueue pulls and cancel jobs in one transaction, prune through the adapters;
5. write each backend's state where it changed, publish it and a cycle summary on NATS, and
   log one canonical line.

`refresh` is the same pass for one backend when a download on it ended: steps 1, 2, 3 and 5
for that backend alone, applying nothing, under the same lock as the cycle.

It raises only when the desired state cannot be read: a database error while applying an action,
writing the status or re-reading the jobs is logged in one line (no SQL) and counted; the action is
a failed outcome and a status write is retried by the next cycle. What it keeps between cycles is
the probe records (seeded from the persisted status on its first read, so grace and backoff survive
a restart or a cron ``reconcile --once``; reset when a backend's id, URL or credentials change), the
last states written (to write and publish only changes) and, to make a steady fleet cost O(backends)
rather than O(backends x models), the last plan and the per-backend views and states
(`runtimestate.reconcile.reuse`), reused only where their inputs did not change. Longer than 400
lines: the phases above share this bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import random
import time  # durations of real work, for the log; decisions read `self._clock`
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import events, jobs, queue, rows
from runtimestate import clock, database, desired, errors, locks, snapshot
from runtimestate.backends import adapters, base
from runtimestate.desired import names, spec, store
from runtimestate.reconcile import conditions, plan, planview, probing, reuse, status

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
    """What happened to one action when the cycle applied it.

    ``skipped``: not attempted because another replica holds the backend's lock (not a
    failure; the next cycle plans again). ``created``: a pull whose enqueue inserted the job
    here, rather than finding the one another replica (or an earlier cycle) had queued.
    """

    action: plan.Action
    ok: bool
    detail: str = ""
    skipped: bool = False
    created: bool = False


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
    unobserved: int = 0  # due, but the deadline passed before a slot freed: state kept
    status_written: bool = True
    desired: desired.DesiredState | None = None  # what the cycle read (credentials, in-process)

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
            "prunes": len(self.plan.of(plan.Prune)),
            "cancels": len(self.plan.of(plan.CancelJob)),
            "holds": len(self.plan.of(plan.Hold)),
            "drift": len(self.plan.of(plan.ReportDrift)),
            "failed_actions": sum(not o.ok and not o.skipped for o in self.outcomes),
            "skipped_locked": sum(o.skipped for o in self.outcomes),
            "status_written": self.status_written,
        }

    def _pulls(self) -> int:
        """Pulls this cycle queued: those it planned in a dry run, else those whose job its
        own insert created (so replicas planning the same pull count it once between them)."""
        if self.dry_run:
            return len(self.plan.of(plan.Pull))
        return sum(o.created for o in self.outcomes if isinstance(o.action, plan.Pull))


@dataclasses.dataclass(frozen=True)
class _Read:
    desired: desired.DesiredState
    jobs: tuple[jobs.Job, ...]
    managed: frozenset[tuple[str, str]]
    previous: Mapping[str, snapshot.LLMState]
    loaded: bool = False  # `previous` was read from the database (first cycle, or unwritten)
    complete: bool = False  # every query of the read returned: the planner may prune, cancel


@dataclasses.dataclass(frozen=True)
class _Observed:
    started: frozenset[str]  # probes that got a slot before the deadline
    fresh: frozenset[str]  # probes that answered: only these observations are acted on


class BackendCycle:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pool: adapters.AdapterPool,
        *,
        sink: MessageSink | None = None,
        settings: Settings = Settings(),
        rng: random.Random | None = None,
        clock: clock.Clock = clock.SYSTEM,
    ) -> None:
        """``clock`` gives every instant the cycle decides by (grace, backoff, ``last_ok_at``,
        status timestamps); the observation deadline stays on the event loop's clock."""
        self._sessions = sessions
        self._clock = clock
        self._pool = pool
        self._sink = sink
        self._settings = settings
        self._rng = rng or random.Random()  # noqa: S311 - probe jitter, not cryptography
        self._records: dict[str, Record] = {}
        self._previous: dict[str, snapshot.LLMState] | None = None
        self._generations: dict[str, int] = {}
        # What a probe record was made against: a new id, URL or credentials starts afresh.
        self._identities: dict[str, tuple[object, ...]] = {}
        # Prunes done whose managed record could not be dropped: retried on the next apply.
        self._unforgotten: dict[str, set[str]] = {}
        self._reuse = reuse.Reuse()
        self._plan: plan.Plan | None = None
        self._cycle = 0
        self._lock = asyncio.Lock()

    async def _tx(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return await database.transaction(self._sessions, work)

    async def run(self, *, dry_run: bool = False) -> Report:
        """One pass; never two at once in this process. Raises only if reading fails."""
        async with self._lock:
            return await self._run(dry_run)

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
            except Exception as exc:  # logged by _failure: the next cycle catches up
                _failure("reading for a status refresh", exc, backend=name)
                return None
            backend = read.desired.backend(name)
            if backend is None:
                return None
            self._match_records(read)
            now = self._clock.now()
            fresh = await self._probe(backend, now)
            view = self._view(read.desired, backend, now, fresh)
            mine = [j for j in read.jobs if j.backend == name]
            decided = plan.compute(
                [view], jobs=[planview.JobView.of(j) for j in mine], managed=read.managed,
                desired_complete=read.complete,
            )  # fmt: skip
            state = self._state(read.desired, backend, decided, mine, view, now)
            written = await self._record_refresh(state, read.previous.get(name), now)
            log.info("status_refresh", backend=name, phase=state.phase.value, answered=fresh,
                     written=written, duration_s=round(time.monotonic() - started, 3))  # fmt: skip
            return state if written else None

    async def _record_refresh(
        self, state: snapshot.LLMState, before: snapshot.LLMState | None, now: dt.datetime
    ) -> bool:
        """Write and publish one refreshed state; False when it was not written."""
        previous = {state.name: before} if before is not None else {}
        try:
            changed = await self._tx(
                lambda s: status.write_state_observed(s, state, previous, observed_at=now)
            )
        except Exception as exc:  # logged by _failure: the next cycle writes it
            _failure("writing a refreshed status", exc, backend=state.name)
            return False
        if changed is None:
            return False  # a newer observation is stored: ours is not the news
        if self._previous is not None:
            self._previous = {**self._previous, state.name: state}
        if changed:
            subject = f"{self._settings.prefix}.v1.state.{state.name}"
            await self._publish(subject, snapshot.to_wire(state))
        return True

    async def _run(self, dry_run: bool) -> Report:
        started = time.monotonic()
        self._cycle += 1
        read = await database.read_snapshot(self._sessions, self._read)
        now = self._clock.now()
        backends = read.desired.backends
        self._match_records(read)
        due = [b for b in backends if self._record(b.name).due(now)]
        seen = await self._observe(due, now)
        views = {b.name: self._view(read.desired, b, now, b.name in seen.fresh) for b in backends}
        decided = plan.compute(
            views.values(),
            jobs=[planview.JobView.of(j) for j in read.jobs],
            managed=read.managed,
            desired_complete=read.complete,
            previous=self._plan,
        )
        self._plan = decided
        outcomes: tuple[Outcome, ...] = ()
        if not dry_run:
            outcomes = await self._apply(decided, read.desired)
            read = await self._reread_jobs(read)
        states = self._states(read, decided, views, now)
        taken = snapshot.Snapshot(states, self._cycle, now)
        written = True
        if not dry_run:
            written = await self._record_states(states, read.previous, now)
            await self._pool.retain(states)
        report = Report(
            self._cycle, dry_run, time.monotonic() - started, decided, outcomes, taken,
            observed=len(seen.started), skipped=len(backends) - len(due),
            unobserved=len(due) - len(seen.started), status_written=written,
            desired=read.desired,
        )  # fmt: skip
        await self._publish(
            f"{self._settings.prefix}.v1.cycles", json.dumps(report.summary()).encode()
        )
        log.info("backend_cycle", **report.summary())
        return report

    async def _read(self, session: AsyncSession) -> _Read:
        """Everything a cycle reads, on one snapshot; raises what the database raises."""
        state = await store.load(session)
        found = await _jobs(session)
        managed = await status.managed(session)
        previous = self._previous
        if previous is None:  # first cycle, or the last status write failed
            return _Read(state, found, managed, await status.load_states(session), True, True)
        return _Read(state, found, managed, previous, loaded=False, complete=True)

    def _record(self, name: str) -> Record:
        return self._records.setdefault(name, probing.Record())

    def _match_records(self, read: _Read) -> None:
        """Start afresh for a backend whose id, type, URL or credentials changed (its failures
        and last good list were someone else's); after a read of the persisted status, resume
        the records this process does not have yet from it (`probing.resumed`)."""
        for backend in read.desired.backends:
            name, value = backend.name, backend.spec
            identity = (backend.meta.id, value.type, value.url, value.credentials)
            if self._identities.get(name, identity) != identity:
                self._records.pop(name, None)
                self._generations.pop(name, None)
            self._identities[name] = identity
            persisted = read.previous.get(name) if read.loaded else None
            if persisted is None or name in self._records:
                continue
            if (persisted.id, persisted.type, persisted.base_url) != (
                backend.meta.id, value.type.value, value.url,
            ):  # fmt: skip
                continue  # the status of an earlier backend of that name
            self._records[name] = status.resumed_record(persisted)
            self._generations[name] = persisted.observed_generation

    async def _observe(self, due: Sequence[spec.Backend], now: dt.datetime) -> _Observed:
        semaphore = asyncio.Semaphore(self._settings.concurrency)
        started: set[str] = set()
        fresh: set[str] = set()

        async def probe(backend: spec.Backend) -> None:
            async with semaphore:
                started.add(backend.name)
                if await self._probe(backend, now):
                    fresh.add(backend.name)

        tasks = [asyncio.create_task(probe(b), name=b.name) for b in due]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._settings.deadline_s)
            for task in late:
                task.cancel()
                name = task.get_name()
                if name not in started:
                    continue  # never probed: not observed this cycle, its record stands
                self._records[name] = probing.failed(
                    self._record(name), "the cycle deadline passed before it answered",
                    "timeout", now, self._settings.probing, self._rng,
                )  # fmt: skip
            if late:
                await asyncio.wait(late)
        return _Observed(frozenset(started), frozenset(fresh))

    async def _probe(self, backend: spec.Backend, now: dt.datetime) -> bool:
        """Observe one backend and record the outcome; True when it answered."""
        record = self._record(backend.name)
        try:
            observation = await self._pool.get(backend.spec).observe()
        except errors.LlmctlError as exc:
            self._records[backend.name] = probing.failed(
                record,
                self._pool.redact(backend.name, exc.detail),  # the adapter masked it too
                exc.reason.value,
                now,
                self._settings.probing,
                self._rng,
            )
            return False
        except Exception as exc:  # a bug of ours: logged with its traceback, treated as temporary
            log.exception("observation failed unexpectedly", backend=backend.name)
            self._records[backend.name] = probing.failed(
                record,
                self._pool.redact(backend.name, f"{type(exc).__name__}: {exc}"),
                errors.Reason.INTERNAL.value,  # never "protocol": the reply was not at fault
                now,
                self._settings.probing,
                self._rng,
            )
            return False
        self._records[backend.name] = probing.succeeded(record, observation, now)
        self._generations[backend.name] = backend.meta.generation
        return True

    def _view(
        self, state: desired.DesiredState, backend: spec.Backend, now: dt.datetime, fresh: bool
    ) -> planview.BackendView:
        record = self._record(backend.name)
        usable = record.usable(now, self._settings.probing)
        # Only what answered this cycle is acted on; a kept list (failing, backing off, not
        # reached before the deadline, resumed from the persisted status) is only reported.
        return self._reuse.view(state, backend, usable, stale=not fresh)

    async def _apply(self, decided: plan.Plan, state: desired.DesiredState) -> tuple[Outcome, ...]:
        """Apply the mutating actions; never raises: what fails is a failed outcome."""
        await self._forget_pruned()
        queued = [a for a in decided.actions if isinstance(a, plan.Pull | plan.CancelJob)]
        outcomes: list[Outcome] = await self._queue(queued) if queued else []
        by_backend: dict[str, list[plan.Prune]] = {}
        for prune in decided.of(plan.Prune):
            by_backend.setdefault(prune.backend, []).append(prune)
        for done in await asyncio.gather(  # none of them raises: no sibling is left unwatched
            *(self._prune_locked(name, prunes, state) for name, prunes in by_backend.items())
        ):
            outcomes += done
        return tuple(outcomes)

    async def _queue(self, queued: Sequence[plan.Action]) -> list[Outcome]:
        """Enqueue pulls and cancel jobs in one transaction, then publish their events. If it
        fails other than for an unreachable database, again one transaction per action, so
        one action the queue refuses does not hold back the others."""
        now = self._clock.now()
        try:
            outcomes, changes = await self._tx(lambda s: _queue_actions(s, queued, now))
        except errors.DatabaseUnavailable as exc:
            detail = _failure("queueing downloads and cancellations", exc, actions=len(queued))
            return [Outcome(a, False, detail) for a in queued]
        except Exception as exc:
            _failure("queueing downloads and cancellations", exc, actions=len(queued))
            outcomes, changes = [], []
            for action in queued:
                try:
                    done, one = await self._tx(
                        functools.partial(_queue_actions, actions=[action], now=now)
                    )
                except Exception as exc:  # logged by _failure, a failed outcome
                    outcomes.append(Outcome(action, False, _failure("queueing", exc)))
                    continue
                outcomes += done
                changes += one
        if self._sink is not None:
            for change in changes:
                if change is not None and change.event is not None:
                    await self._sink.publish(change.event)
        return outcomes

    async def _prune_locked(
        self, name: str, prunes: Sequence[plan.Prune], state: desired.DesiredState
    ) -> list[Outcome]:
        """Prune under the backend's advisory lock: replicas never delete from one at once.
        When another replica holds it, every prune is skipped (one debug line; not a failure:
        the next cycle plans again). Never raises: when the lock cannot be taken (database
        gone), every prune failed."""
        done: list[Outcome] | None = None
        try:
            async with locks.backend_lock(self._sessions, name) as acquired:
                if not acquired:
                    log.debug("backend cycle: prunes skipped; another replica holds the lock",
                              backend=name, prunes=len(prunes))  # fmt: skip
                    held = "skipped: another replica is acting on this backend"
                    return [Outcome(p, False, held, skipped=True) for p in prunes]
                done = list(await asyncio.gather(*(self._prune(p, state) for p in prunes)))
        except Exception as exc:  # logged by _failure, failed outcomes
            detail = _failure("taking the backend's lock to prune", exc, backend=name)
            if done is None:
                return [Outcome(p, False, detail) for p in prunes]
        assert done is not None  # releasing the lock failed after the prunes ran
        return done

    async def _prune(self, action: plan.Prune, state: desired.DesiredState) -> Outcome:
        """Delete one model and drop llmctl's record of it. Never raises."""
        backend = state.backend(action.backend)
        assert backend is not None
        try:
            adapter = self._pool.get(backend.spec)
            if not isinstance(adapter, base.Deleter):
                return Outcome(action, False, "this backend cannot delete models")
            with contextlib.suppress(errors.ModelNotFound):  # already gone: goal reached
                await adapter.delete(action.model)
        except errors.LlmctlError as exc:
            detail = self._pool.redact(action.backend, exc.detail)
            return Outcome(action, False, f"{exc.reason.value}: {detail}")
        except Exception as exc:  # logged by _failure, a failed outcome
            return Outcome(action, False, _failure("pruning", exc, backend=action.backend))
        key = names.key(action.model, backend.spec.type)
        try:
            await self._tx(lambda s: status.forget(s, action.backend, [key]))
        except Exception as exc:  # logged by _failure, retried next cycle
            self._unforgotten.setdefault(action.backend, set()).add(key)
            failure = _failure("dropping the record of a pruned model", exc, backend=action.backend)
            return Outcome(action, False, f"deleted, but not recorded (retried): {failure}")
        return Outcome(action, True)

    async def _forget_pruned(self) -> None:
        """Drop the records that prunes of earlier cycles could not drop."""
        if not self._unforgotten:
            return
        pending = self._unforgotten

        async def forget(session: AsyncSession) -> None:
            for name, keys in pending.items():
                await status.forget(session, name, keys)

        try:
            await self._tx(forget)
        except Exception as exc:  # logged by _failure, retried next cycle
            _failure("dropping the records of pruned models", exc)
            return
        self._unforgotten = {}

    async def _reread_jobs(self, read: _Read) -> _Read:
        """The jobs after applying, for the status; the ones read before if that fails."""
        try:
            return dataclasses.replace(read, jobs=await self._tx(_jobs))
        except Exception as exc:  # logged by _failure; the status is older
            _failure("re-reading the jobs", exc)
            return read

    def _states(
        self,
        read: _Read,
        decided: plan.Plan,
        views: Mapping[str, planview.BackendView],
        now: dt.datetime,
    ) -> dict[str, snapshot.LLMState]:
        by_backend: dict[str, list[jobs.Job]] = {}
        for job in read.jobs:
            by_backend.setdefault(job.backend, []).append(job)
        states = {
            backend.name: self._state(
                read.desired, backend, decided, by_backend.get(backend.name, ()),
                views[backend.name], now,
            )
            for backend in read.desired.backends
        }  # fmt: skip
        for table in (self._records, self._identities, self._generations):
            for name in [n for n in table if n not in states]:
                del table[name]
        self._reuse.retain(states)
        return states

    def _state(
        self,
        state: desired.DesiredState,
        backend: spec.Backend,
        decided: plan.Plan,
        backend_jobs: Sequence[jobs.Job],
        view: planview.BackendView,
        now: dt.datetime,
    ) -> snapshot.LLMState:
        """One backend's state after this pass (the one kept by `reuse`, when no input changed)."""
        policy = self._settings.probing
        record = self._record(backend.name)
        inputs = conditions.Inputs(
            backend=backend,
            record=record,
            usable=record.usable(now, policy),
            actions=decided.for_backend(backend.name).actions,
            jobs=backend_jobs,
            observed_generation=self._generations.get(backend.name, 0),
            overrides=state.overrides(backend.spec.type),
        )
        return self._reuse.state(
            inputs,
            record.phase(now, policy),
            view,
            functools.partial(_build, state, inputs, now, policy),
        )

    async def _record_states(
        self,
        states: dict[str, snapshot.LLMState],
        before: Mapping[str, snapshot.LLMState],
        now: dt.datetime,
    ) -> bool:
        """Write the states that changed, drop the gone ones, then publish both.

        False when the write failed (logged): the states last written stay the reference, so
        the next cycle writes (and publishes) these changes again.
        """
        gone = [name for name in before if name not in states]

        async def write(session: AsyncSession) -> list[str]:
            changed = await status.write_states(session, states, before, now)
            await status.forget_backends(session, gone)
            return changed

        try:
            changed = await self._tx(write)
        except Exception as exc:  # logged by _failure, retried next cycle
            _failure("writing the status", exc, backends=len(states))
            return False
        self._previous = dict(states)
        if self._sink is None:
            return True  # nothing to publish to: do not encode 1,000 states for nobody
        prefix = self._settings.prefix
        for name in changed:
            await self._publish(f"{prefix}.v1.state.{name}", snapshot.to_wire(states[name]))
        for name in gone:  # resolvers elsewhere stop routing to it now, not at their resync
            await self._publish(f"{prefix}.v1.state.{name}", snapshot.removed_to_wire(name))
        return True

    async def _publish(self, subject: str, payload: bytes) -> None:
        if self._sink is not None:
            await self._sink.publish_message(subject, payload)


def _build(
    state: desired.DesiredState,
    inputs: conditions.Inputs,
    now: dt.datetime,
    policy: probing.Policy,
) -> snapshot.LLMState:
    """`conditions.build` with the backend's desired models filled in."""
    declared = state.models_for(inputs.backend.name)
    return conditions.build(
        dataclasses.replace(inputs, desired=tuple(m.name for m in declared)), now, policy
    )


def _failure(what: str, exc: Exception, **context: object) -> str:
    """Log one line for a step of the cycle that failed, and return it for the outcome.

    A database error is named by its driver's first line, never SQLAlchemy's text (which
    carries the statement and its parameters); an unexpected error keeps its traceback.
    """
    if isinstance(exc, errors.DatabaseUnavailable | sa.exc.SQLAlchemyError | OSError):
        detail = f"database error: {database.describe(exc)}"
        log.warning(f"backend cycle: {what} failed", error=detail, **context)
    elif isinstance(exc, queue.QueueError):
        detail = str(exc)
        log.warning(f"backend cycle: {what} failed", error=detail, **context)
    else:
        detail = f"unexpected: {type(exc).__name__}: {exc}"
        log.exception(f"backend cycle: {what} failed", **context)
    return detail


async def _jobs(session: AsyncSession) -> tuple[jobs.Job, ...]:
    """The newest job of every (backend, model) plus every active one, deduplicated."""
    latest = await queue.latest(session)
    active = await queue.list_jobs(session, states=[jobs.JobState.QUEUED, jobs.JobState.RUNNING])
    found = {job.id: job for job in (*latest.values(), *active)}
    return tuple(found.values())


async def _queue_actions(
    session: AsyncSession, actions: Sequence[plan.Action], now: dt.datetime
) -> tuple[list[Outcome], list[rows.Change | None]]:
    outcomes: list[Outcome] = []
    changes: list[rows.Change | None] = []
    for action in actions:
        if isinstance(action, plan.Pull):
            change = await queue.enqueue(
                session,
                action.backend,
                action.model,
                model_key=action.model_key,
                declaration=action.declaration,
                now=now,
            )
            changes.append(change)
            created = change.event is not None  # `enqueue`: an event only when it inserted
            outcomes.append(
                Outcome(action, True, "" if created else "queued already", created=created)
            )
            continue
        if isinstance(action, plan.CancelJob):
            changes.append(
                await queue.cancel(session, action.job_id, reason=action.reason.text, now=now)
            )
        outcomes.append(Outcome(action, True))
    return outcomes, changes

"""Applying a plan: pulls queued and jobs cancelled in one transaction, the rest under locks.

`Executor.apply` is called by `runtimestate.reconcile.cycle` with the plan of a pass that is not
a dry run. Pulls and cancellations go to the download queue (`dwqueue.queue`) in one transaction
whose events are published after it commits. The rest goes through the adapters, under each
backend's advisory lock so replicas never act on one backend at once, in phases: a node
agent's instance stops, then prunes, then instance starts and restarts (stop, then start) in
plan order, then LoRA adapter unloads, then loads (issue 16; a load is recorded as llmctl's in
`managed_adapters`, an unload drops that record). A prune then drops llmctl's record of the
model, and a start records the model as llmctl's (`status.record_pulled`, so `prune: managed`
may stop it later); both writes are retried on the next apply when they fail. A prune whose
model's stop failed is not attempted.

It must not decide anything (what to do is the plan's) and never raises: an action that fails,
or that another replica's lock holds back, is an `Outcome` that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import queue, rows
from runtimestate import clock, database, desired, errors, locks
from runtimestate.backends import adapters, base
from runtimestate.desired import names, spec
from runtimestate.reconcile import failures, plan, preloads, recording, status, steps

log = structlog.get_logger(__name__)
T = TypeVar("T")
Write = Callable[[AsyncSession], Awaitable[None]]  # one idempotent write of llmctl's records
Acted = (
    steps.StopInstance | steps.Prune | steps.StartInstance | steps.RestartInstance
    | steps.Preload | steps.Unload
    | steps.UnloadAdapter | steps.LoadAdapter
)  # fmt: skip
_PHASES: tuple[tuple[type[Acted], ...], ...] = (
    (steps.StopInstance,), (steps.Prune,), (steps.StartInstance, steps.RestartInstance)
)  # fmt: skip


class AdapterSource(Protocol):
    """Where the executor gets adapters: `adapters.AdapterPool` (or a test's own)."""

    def get(self, backend: spec.BackendSpec) -> object: ...

    def redact(self, name: str, text: str) -> str: ...


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one action when the cycle applied it.

    ``skipped``: not attempted because another replica holds the backend's lock (not a
    failure; the next cycle plans again). ``created``: a pull whose enqueue inserted the job
    here, rather than finding the one another replica (or an earlier cycle) had queued.
    """

    action: steps.Action
    ok: bool
    detail: str = ""
    skipped: bool = False
    created: bool = False
    terminal: bool = False  # the backend refused it for good: the same call would fail again


class Executor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pool: adapters.AdapterPool | AdapterSource,
        *,
        sink: recording.MessageSink | None,
        clock: clock.Clock,
    ) -> None:
        self._sessions = sessions
        self._pool = pool
        self._sink = sink
        self._clock = clock
        # Records of actions done that could not be written (each write is idempotent):
        # written, in order, at the start of the next apply.
        self._unwritten: list[Write] = []
        # Preloads whose result is unknown (issue 16): the cycle tells the planner.
        self.pending = preloads.Pending()

    async def _tx(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return await database.transaction(self._sessions, work)

    async def apply(self, decided: plan.Plan, state: desired.DesiredState) -> tuple[Outcome, ...]:
        """Apply the mutating actions; never raises: what fails is a failed outcome."""
        await self._write_pending()
        queued = [a for a in decided.actions if isinstance(a, steps.Pull | steps.CancelJob)]
        outcomes: list[Outcome] = await self._queue(queued) if queued else []
        by_backend: dict[str, list[Acted]] = {}
        for action in decided.actions:  # plan order
            if isinstance(action, Acted):
                by_backend.setdefault(action.backend, []).append(action)
        for done in await asyncio.gather(  # none of them raises: no sibling is left unwatched
            *(self._act_locked(name, acts, state) for name, acts in by_backend.items())
        ):
            outcomes += done
        return tuple(outcomes)

    async def _queue(self, queued: Sequence[steps.Action]) -> list[Outcome]:
        """Enqueue pulls and cancel jobs in one transaction, then publish their events. If it
        fails other than for an unreachable database, again one transaction per action, so
        one action the queue refuses does not hold back the others."""
        now = self._clock.now()
        what = "queueing downloads and cancellations"
        try:
            outcomes, changes = await self._tx(lambda s: _queue_actions(s, queued, now))
        except errors.DatabaseUnavailable as exc:
            detail = failures.logged(what, exc, actions=len(queued))
            return [Outcome(a, False, detail) for a in queued]
        except Exception as exc:
            failures.logged(what, exc, actions=len(queued))
            outcomes, changes = [], []
            for action in queued:
                try:
                    done, one = await self._tx(
                        functools.partial(_queue_actions, actions=[action], now=now)
                    )
                except Exception as exc:  # logged by failures.logged, a failed outcome
                    outcomes.append(Outcome(action, False, failures.logged("queueing", exc)))
                    continue
                outcomes += done
                changes += one
        if self._sink is not None:
            for change in changes:
                if change is not None and change.event is not None:
                    await self._sink.publish(change.event)
        return outcomes

    async def _act_locked(
        self, name: str, acts: Sequence[Acted], state: desired.DesiredState
    ) -> list[Outcome]:
        """Act on one backend under its advisory lock: replicas never act on one at once.
        When another replica holds it, every action is skipped (one debug line; not a failure:
        the next cycle plans again). Never raises: when the lock cannot be taken (database
        gone), every action failed."""
        done: list[Outcome] | None = None
        try:
            async with locks.backend_lock(self._sessions, name) as acquired:
                if not acquired:
                    log.debug("backend cycle: actions skipped; another replica holds the lock",
                              backend=name, actions=len(acts))  # fmt: skip
                    held = "skipped: another replica is acting on this backend"
                    return [Outcome(a, False, held, skipped=True) for a in acts]
                done = await self._phases(acts, state)
        except Exception as exc:  # logged by failures.logged, failed outcomes
            detail = failures.logged("taking the backend's lock to act", exc, backend=name)
            if done is None:
                return [Outcome(a, False, detail) for a in acts]
        assert done is not None  # releasing the lock failed after the actions ran
        return done

    async def _phases(self, acts: Sequence[Acted], state: desired.DesiredState) -> list[Outcome]:
        """Stops, then prunes (concurrently; none of a model whose stop failed), then starts
        and restarts one by one in plan order (the planner placed them in that order)."""
        stops = [a for a in acts if isinstance(a, steps.StopInstance)]
        done = list(await asyncio.gather(*(self._instance(a, state) for a in stops)))
        unstopped = {o.action.model for o in done if not o.ok}
        prunes = [a for a in acts if isinstance(a, steps.Prune)]
        done += await asyncio.gather(*(self._prune(p, state, unstopped) for p in prunes))
        for action in acts:
            if isinstance(action, steps.StartInstance | steps.RestartInstance):
                done.append(await self._instance(action, state))
        # Warm models (issue 16): unloads free memory before preloads fill it.
        for warmth in (steps.Unload, steps.Preload):
            for action in acts:
                if isinstance(action, warmth):
                    done.append(await self._residency(action, state))
        for lora in (steps.UnloadAdapter, steps.LoadAdapter):  # unloads free LoRA slots first
            loras = [a for a in acts if isinstance(a, lora)]
            done += await asyncio.gather(*(self._adapter(a, state) for a in loras))
        return done

    async def _residency(
        self, action: steps.Preload | steps.Unload, state: desired.DesiredState
    ) -> Outcome:
        """Preload a warm model (recorded as llmctl's first, so a model llmctl loaded always
        has its record), or unload one llmctl preloaded and drop the record. A preload that
        failed without an answer from the node is pending (`preloads.Pending`). Never raises."""
        backend = state.backend(action.backend)
        assert backend is not None
        key = names.key(action.model, backend.spec.type)
        now = self._clock.now()
        sent = False
        try:
            adapter = self._pool.get(backend.spec)
            if not isinstance(adapter, base.Preloader):
                return Outcome(action, False, "this backend cannot preload models")
            if isinstance(action, steps.Preload):
                await self._tx(lambda s: preloads.record(s, action.backend, action.model, key, now))
                sent = True
                await adapter.preload(action.model, action.keep_alive)
                return Outcome(action, True)
            if action.loaded:
                await adapter.unload(action.model)
            await self._tx(lambda s: preloads.forget(s, action.backend, [key]))
        except errors.LlmctlError as exc:
            if sent and exc.retryable:  # no answer from the node: it may still be loading
                self.pending.mark(action.backend, key, now)
            detail = self._pool.redact(action.backend, exc.detail)
            return Outcome(action, False, f"{exc.reason.value}: {detail}")
        except Exception as exc:  # logged by failures.logged, a failed outcome (next cycle)
            what = "preloading" if isinstance(action, steps.Preload) else "unloading"
            return Outcome(action, False, failures.logged(what, exc, backend=action.backend))
        return Outcome(action, True)

    async def _adapter(
        self, action: steps.LoadAdapter | steps.UnloadAdapter, state: desired.DesiredState
    ) -> Outcome:
        """Load or unload one LoRA adapter, then record it as llmctl's or drop that record (a
        failed write is logged; the next load of it records it again). Never raises."""
        backend = state.backend(action.backend)
        assert backend is not None
        try:
            adapter = self._pool.get(backend.spec)
            if not isinstance(adapter, base.LoraManager):
                return Outcome(action, False, "this backend cannot load adapters", terminal=True)
            if isinstance(action, steps.LoadAdapter):
                await adapter.load_lora(
                    action.adapter, action.source, action.base_model, action.revision
                )
            else:
                with contextlib.suppress(errors.ModelNotFound):  # already gone: goal reached
                    await adapter.unload_lora(action.adapter)
        except errors.LlmctlError as exc:
            detail = self._pool.redact(action.backend, exc.detail)
            terminal = isinstance(exc, errors.TerminalError)
            return Outcome(action, False, f"{exc.reason.value}: {detail}", terminal=terminal)
        except Exception as exc:  # logged by failures.logged, a failed outcome
            return Outcome(action, False, failures.logged("acting on an adapter", exc))
        now, name, lora = self._clock.now(), action.backend, action.adapter
        if isinstance(action, steps.LoadAdapter):
            return await self._recorded(
                action, lambda s: status.record_loaded(s, name, lora, now), "loaded"
            )
        return await self._recorded(
            action, lambda s: status.forget_adapter(s, name, lora), "unloaded"
        )

    async def _instance(
        self,
        action: steps.StopInstance | steps.StartInstance | steps.RestartInstance,
        state: desired.DesiredState,
    ) -> Outcome:
        """Stop, start or restart one instance; a start is recorded as llmctl's. Never raises."""
        backend = state.backend(action.backend)
        assert backend is not None
        try:
            adapter = self._pool.get(backend.spec)
            if not isinstance(adapter, base.InstanceManager):
                return Outcome(action, False, "this backend does not run instances")
            if isinstance(action, steps.StopInstance | steps.RestartInstance):
                await adapter.stop_instance(action.model)
            if isinstance(action, steps.StartInstance | steps.RestartInstance):
                await adapter.start_instance(action.model, action.weights, action.vllm)
        except errors.LlmctlError as exc:
            detail = self._pool.redact(action.backend, exc.detail)
            return Outcome(action, False, f"{exc.reason.value}: {detail}")
        except Exception as exc:  # logged by failures.logged, a failed outcome
            return Outcome(action, False, failures.logged("acting on an instance", exc))
        if isinstance(action, steps.StopInstance):
            return Outcome(action, True)
        key = names.key(action.model, backend.spec.type)
        now, name, model = self._clock.now(), action.backend, action.model
        return await self._recorded(
            action, lambda s: status.record_pulled(s, name, model, key, None, now), "started"
        )

    async def _prune(
        self, action: steps.Prune, state: desired.DesiredState, unstopped: Collection[str] = ()
    ) -> Outcome:
        """Delete one model and drop llmctl's record of it, unless its instance's stop failed
        (``unstopped``). Never raises."""
        backend = state.backend(action.backend)
        assert backend is not None
        if action.model in unstopped:
            return Outcome(action, False, "not pruned: stopping its instance failed")
        try:
            adapter = self._pool.get(backend.spec)
            if not isinstance(adapter, base.Deleter):
                return Outcome(action, False, "this backend cannot delete models")
            with contextlib.suppress(errors.ModelNotFound):  # already gone: goal reached
                await adapter.delete(action.model)
        except errors.LlmctlError as exc:
            detail = self._pool.redact(action.backend, exc.detail)
            return Outcome(action, False, f"{exc.reason.value}: {detail}")
        except Exception as exc:  # logged by failures.logged, a failed outcome
            failure = failures.logged("pruning", exc, backend=action.backend)
            return Outcome(action, False, failure)
        key, name = names.key(action.model, backend.spec.type), action.backend
        return await self._recorded(action, lambda s: status.forget(s, name, [key]), "deleted")

    async def _recorded(self, action: steps.Action, write: Write, done: str) -> Outcome:
        """Write llmctl's record of ``action``, which succeeded (``done`` says how). A write
        that fails is kept and retried at the start of the next apply: the outcome says so.
        Never raises."""
        try:
            await self._tx(write)
        except Exception as exc:  # logged by failures.logged, retried next apply
            self._unwritten.append(write)
            failure = failures.logged(f"recording what was {done}", exc, backend=action.backend)
            return Outcome(action, False, f"{done}, but not recorded (retried): {failure}")
        return Outcome(action, True)

    async def _write_pending(self) -> None:
        """Write the records that actions of earlier cycles could not write, in order."""
        if not self._unwritten:
            return
        pending = self._unwritten

        async def write_all(session: AsyncSession) -> None:
            for write in pending:
                await write(session)

        try:
            await self._tx(write_all)
        except Exception as exc:  # logged by failures.logged, retried next apply
            failures.logged("writing the records of earlier actions", exc)
            return
        self._unwritten = []


def refused(outcomes: Sequence[Outcome]) -> dict[str, dict[str, str]]:
    """The failed instance starts and restarts of a pass, by backend and model."""
    found: dict[str, dict[str, str]] = {}
    for outcome in outcomes:
        action = outcome.action
        started = isinstance(action, steps.StartInstance | steps.RestartInstance)
        if started and not outcome.ok and not outcome.skipped:
            found.setdefault(action.backend, {})[action.model] = outcome.detail
    return found


async def _queue_actions(
    session: AsyncSession, actions: Sequence[steps.Action], now: dt.datetime
) -> tuple[list[Outcome], list[rows.Change | None]]:
    outcomes: list[Outcome] = []
    changes: list[rows.Change | None] = []
    for action in actions:
        if isinstance(action, steps.Pull):
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
        if isinstance(action, steps.CancelJob):
            changes.append(
                await queue.cancel(session, action.job_id, reason=action.reason.text, now=now)
            )
        outcomes.append(Outcome(action, True))
    return outcomes, changes

"""The backend cycle's rolling-upgrade step (issue 19): the plan, extended with upgrades.

`Rolling.planned` takes the cycle's plan, its views and usable observations, the jobs and the
desired state, and adds the upgrades `runtimestate.reconcile.rollouts` decides (re-pulls,
restarts, and the copies held with why) for the Ollama backends and node agents holding a
declared model older than what upstream has (`runtimestate.reconcile.upgradewatch` knows it).
A node agent's copy is upgraded in two steps: its weights are pulled again (the instance keeps
serving the old snapshot), then its instance is restarted onto the new one (out of service
until ready). Upgrades asked for by hand (`runtimestate.reconcile.upgraderequests`) are read
each cycle an upgrade is known; a request is deleted once no backend it names holds an old copy
(not in a dry run). The executor then queues the re-pulls like any pull (a download job, its
progress on NATS) and restarts instances as it does for changed engine arguments.

Called by `runtimestate.reconcile.cycle` only; it must not act or write the status.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import jobs as dwjobs
from runtimestate import database
from runtimestate.backends import base
from runtimestate.desired import names, spec, updatepolicy
from runtimestate.reconcile import (
    failures,
    plan,
    planview,
    reading,
    rollouts,
    steps,
    upgraderequests,
    upgrades,
    upgradewatch,
)

_OLLAMA, _NODE = spec.BackendType.OLLAMA, spec.BackendType.NODE
_INSTANCE = (steps.StartInstance, steps.RestartInstance, steps.StopInstance)


class Rolling:
    """Adds upgrades to a cycle's plan; one per backend cycle."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], watch: upgradewatch.Watch
    ) -> None:
        self._sessions, self._watch = sessions, watch

    async def planned(
        self,
        decided: plan.Plan,
        views: Mapping[str, planview.BackendView],
        usable: Callable[[str], base.Observation | None],
        read: reading.Read,
        *,
        dry_run: bool,
    ) -> plan.Plan:
        """``decided`` with this cycle's upgrades; itself when there are none, or when the
        requests cannot be read (logged: no upgrade this cycle). Raises nothing."""
        known = self._watch.known()
        if not known:
            return decided
        copies = list(_copies(views, usable, read.jobs))
        outdated = [c for c in copies if _older(c, known)]
        try:
            requested = await database.transaction(
                self._sessions, lambda s: self._requests(s, outdated, dry_run)
            )
        except Exception as exc:  # logged by failures.logged; the next cycle tries again
            failures.logged("reading the upgrade requests", exc)
            return decided
        if not outdated:
            return decided
        # A declared model's identity is its Ollama key; a copy's key is its backend type's.
        declared = {str(names.key(m.name, _OLLAMA)): m.spec.update for m in read.desired.models}
        policies = {c.model_key: declared.get(_identity(c), updatepolicy.DEFAULT) for c in copies}
        asked = {(c.model_key, b) for c in copies for m, b in requested if m == _identity(c)}
        return merged(decided, rollouts.compute(copies, known, policies, asked))

    async def _requests(
        self, session: AsyncSession, outdated: Sequence[rollouts.Copy], dry_run: bool
    ) -> frozenset[tuple[str, str]]:
        """The requests still to act on, after deleting those no old copy is left for."""
        asked = await upgraderequests.load(session)
        held = {(_identity(c), c.backend) for c in outdated}
        held |= {(_identity(c), rollouts.ALL_BACKENDS) for c in outdated}
        done = asked - held
        if done and not dry_run:
            await upgraderequests.forget(session, done)
        return asked & held


def _identity(copy: rollouts.Copy) -> str:
    """The declared model's identity (its Ollama key), as requests name it."""
    return str(names.key(copy.model, _OLLAMA))


def _older(copy: rollouts.Copy, known: Mapping[upgrades.Source, upgrades.Latest]) -> bool:
    latest = known.get(copy.source)
    return latest is not None and latest.digest != copy.digest


def _copies(
    views: Mapping[str, planview.BackendView],
    usable: Callable[[str], base.Observation | None],
    found: Iterable[dwjobs.Job],
) -> Iterator[rollouts.Copy]:
    """Each declared model an Ollama backend or node agent holds, as a rollout sees it."""
    active = {(j.backend, j.model_key) for j in found if j.active}
    for view in views.values():
        observation = usable(view.name)
        if observation is None or view.observed is None:
            continue
        if view.type is _NODE:
            yield from _node_copies(view, observation, active)
            continue
        if view.type is not _OLLAMA:
            continue
        fresh = not view.observed.stale
        held = {names.key(m.name, _OLLAMA): m.digest for m in observation.models if m.digest}
        for wanted in view.desired:
            key = names.key(wanted.name, _OLLAMA)
            digest = held.get(key)
            if digest is None:
                continue
            yield rollouts.Copy(
                view.name, wanted.name, key, wanted.declaration,
                upgrades.Source("ollama", str(key)), digest, serving=fresh,
                upgrading=(view.name, key) in active, keeps_serving=True,
                actionable=fresh and view.can_pull,
            )  # fmt: skip


def _node_copies(
    view: planview.BackendView, observation: base.Observation, active: set[tuple[str, str]]
) -> Iterator[rollouts.Copy]:
    """A node agent's copies: its weights' commit, else (weights upstream's already) the
    commit of the snapshot its instance runs, which a restart moves onto the new weights."""
    assert view.observed is not None
    fresh = not view.observed.stale
    held = {names.key(m.name, _NODE): m.digest for m in observation.models if m.digest}
    running = {names.key(i.name, _NODE): i for i in observation.instances}
    for wanted in view.desired:
        key = names.key(wanted.name, _NODE)
        weights, instance = held.get(key), running.get(key)
        if weights is None:
            continue
        ready = instance is not None and instance.state is base.InstanceState.READY
        copy = rollouts.Copy(
            view.name, wanted.name, key, wanted.declaration, upgrades.Source("hub", str(key)),
            weights, serving=fresh and ready, upgrading=(view.name, key) in active,
            keeps_serving=True, actionable=fresh and view.can_pull,
        )  # fmt: skip
        if instance is not None and instance.commit and instance.commit != weights:
            copy = dataclasses.replace(
                copy, digest=instance.commit, restarts=True, keeps_serving=False,
                weights=instance.weights, vllm=wanted.vllm,
            )  # fmt: skip
        yield copy


def merged(decided: plan.Plan, extra: Sequence[steps.Action]) -> plan.Plan:
    """``decided`` with ``extra`` actions sorted in, each backend's share included."""
    if not extra:
        return decided
    # An instance the plan already starts, restarts or stops is left to that action.
    taken = {(a.backend, a.model) for a in decided.actions if isinstance(a, _INSTANCE)}
    extra = [a for a in extra if (a.backend, a.model) not in taken]
    by_backend: dict[str, list[steps.Action]] = collections.defaultdict(list)
    for action in extra:
        by_backend[action.backend].append(action)
    rolled = dict(decided.rolled)
    for name, added in by_backend.items():
        mine = (*decided.for_backend(name).actions, *added)
        rolled[name] = tuple(sorted(mine, key=steps.order))
    actions = tuple(sorted((*decided.actions, *extra), key=steps.order))
    return plan.Plan(actions, decided.decisions, rolled)

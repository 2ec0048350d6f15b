"""The backend cycle's rolling-upgrade step (issue 19): the plan, extended with upgrades.

`Rolling.planned` takes the cycle's plan, its views and usable observations, the jobs and the
desired state, and adds the upgrades `runtimestate.reconcile.rollouts` decides (re-pulls, and
the copies held with why) for the Ollama backends holding a declared model older than what
upstream has (`runtimestate.reconcile.upgradewatch` knows that). Upgrades asked for by hand
(`runtimestate.reconcile.upgraderequests`) are read each cycle an upgrade is known, and a
request is deleted once no backend it names holds an old copy (not in a dry run). The executor
then queues the re-pulls like any pull: a download job, its progress on NATS.

Node agents are detected (``UpdateAvailable``) but not rolled yet: their upgrade is a
re-download plus an instance restart, which needs the instance's commit. Called by
`runtimestate.reconcile.cycle` only; it must not act or write the status.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import jobs as dwjobs
from runtimestate import database
from runtimestate.backends import base
from runtimestate.desired import names, spec
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

_OLLAMA = spec.BackendType.OLLAMA


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
        policies = {names.key(m.name, _OLLAMA): m.spec.update for m in read.desired.models}
        return merged(decided, rollouts.compute(copies, known, policies, requested))

    async def _requests(
        self, session: AsyncSession, outdated: Sequence[rollouts.Copy], dry_run: bool
    ) -> frozenset[tuple[str, str]]:
        """The requests still to act on, after deleting those no old copy is left for."""
        asked = await upgraderequests.load(session)
        held = {(str(c.model_key), c.backend) for c in outdated}
        held |= {(str(c.model_key), rollouts.ALL_BACKENDS) for c in outdated}
        done = asked - held
        if done and not dry_run:
            await upgraderequests.forget(session, done)
        return asked & held


def _older(copy: rollouts.Copy, known: Mapping[upgrades.Source, upgrades.Latest]) -> bool:
    latest = known.get(copy.source)
    return latest is not None and latest.digest != copy.digest


def _copies(
    views: Mapping[str, planview.BackendView],
    usable: Callable[[str], base.Observation | None],
    found: Iterable[dwjobs.Job],
) -> Iterator[rollouts.Copy]:
    """Each declared model an Ollama backend holds, with its digest, as a rollout sees it."""
    active = {(j.backend, j.model_key) for j in found if j.active}
    for view in views.values():
        observation = usable(view.name)
        if view.type is not _OLLAMA or observation is None or view.observed is None:
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


def merged(decided: plan.Plan, extra: Sequence[steps.Action]) -> plan.Plan:
    """``decided`` with ``extra`` actions sorted in, each backend's share included."""
    if not extra:
        return decided
    by_backend: dict[str, list[steps.Action]] = collections.defaultdict(list)
    for action in extra:
        by_backend[action.backend].append(action)
    rolled = dict(decided.rolled)
    for name, added in by_backend.items():
        mine = (*decided.for_backend(name).actions, *added)
        rolled[name] = tuple(sorted(mine, key=steps.order))
    actions = tuple(sorted((*decided.actions, *extra), key=steps.order))
    return plan.Plan(actions, decided.decisions, rolled)

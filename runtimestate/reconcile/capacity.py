"""The cycle's admission lookup: each backend's disk and the sizes of what it would pull.

Between observing and planning, `Lookup.views` gives a `planview.Capacity` to the views of
backends with a known disk that have a fresh observation and declared models that are missing
with no download under way: only those need admitting.
- Ollama: the disk is declared (`BackendSpec.disk_bytes`; Ollama has no disk API). Sizes come
  from the registry's manifests (`runtimestate.backends.registry`, cached per model, so a fleet
  asks once per model, not per backend per cycle). Used bytes are the observed sizes of
  installed models plus the sizes of the downloads under way (their whole size: their partial
  files are on disk too); free = capacity - used.
- Node agents: the disk is the agent's report (``/v1/info``), else the declaration. Sizes are
  the bytes a pull still needs, from the agent (`runtimestate.reconcile.agentsizes`: its cache
  counts as present); free = the reported free less what the downloads under way still fetch.

A backend whose view needs no capacity keeps its view object, and one whose view and capacity
did not change gets the very view it got last time, so the planner's reuse still holds. Called
by `runtimestate.reconcile.cycle` only; it must not plan, act or write.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from dwqueue import jobs as dwjobs
from runtimestate import clock as clocks
from runtimestate.backends import adapters, base, registry
from runtimestate.desired import names, spec
from runtimestate.reconcile import agentsizes, planview

_OLLAMA, _NODE = spec.BackendType.OLLAMA, spec.BackendType.NODE


@dataclasses.dataclass(frozen=True)
class Need:
    """One backend's admission inputs: its view, declared disk, observation and active jobs."""

    backend: spec.Backend
    view: planview.BackendView
    observation: base.Observation | None
    jobs: tuple[dwjobs.Job, ...]


def needs(
    backends: Iterable[spec.Backend],
    views: Mapping[str, planview.BackendView],
    usable: Callable[[str], base.Observation | None],
    jobs: Sequence[dwjobs.Job],
) -> list[Need]:
    """The admission inputs of the backends with a declared disk, and of node agents (which
    report theirs); the others need none."""
    declared = [b for b in backends if b.spec.disk_bytes is not None or b.spec.type is _NODE]
    if not declared:
        return []
    mine = {b.name for b in declared}
    by_backend: dict[str, list[dwjobs.Job]] = {}
    for job in jobs:
        if job.backend in mine:
            by_backend.setdefault(job.backend, []).append(job)
    return [
        Need(b, views[b.name], usable(b.name), tuple(by_backend.get(b.name, ()))) for b in declared
    ]


class Lookup:
    """Adds capacities to views; one per backend cycle (it keeps the last views it gave)."""

    def __init__(
        self,
        sizes: registry.Sizes | None,
        pool: adapters.AdapterPool,
        agents: agentsizes.AgentSizes,
    ) -> None:
        self._sizes, self._pool, self._agents = sizes, pool, agents
        self._given: dict[str, tuple[planview.BackendView, planview.BackendView]] = {}

    @classmethod
    def built(
        cls, registry_url: str | None, pool: adapters.AdapterPool, clock: clocks.Clock
    ) -> Lookup:
        """A lookup asking the registry at ``registry_url`` (None: Ollama sizes unknown)."""
        sizes = registry.Sizes(registry_url, clock=clock) if registry_url else None
        return cls(sizes, pool, agentsizes.AgentSizes(clock=clock))

    async def views(self, needs: Iterable[Need]) -> dict[str, planview.BackendView]:
        """The views of ``needs`` by backend name, with a capacity where admission applies."""
        given = list(needs)
        result = {n.view.name: n.view for n in given}
        ollama = [n for n in given if n.view.type is _OLLAMA and _missing(n)]
        known: Mapping[str, int] = {}
        if self._sizes is not None and ollama:
            models = {m for n in ollama for m in (*_missing(n), *_in_flight(n))}
            models |= {m.name for n in ollama for m in _observed_without_size(n)}
            known = await self._sizes.lookup(models)
        for need in ollama:
            result[need.view.name] = self._given_view(need, _ollama(need, known))
        nodes = [n for n in given if n.view.type is _NODE and _missing(n)]
        found = await asyncio.gather(*(self._node_sizes(n) for n in nodes))
        for need, sizes in zip(nodes, found, strict=True):
            result[need.view.name] = self._given_view(need, _node(need, sizes))
        return result

    async def aclose(self) -> None:
        if self._sizes is not None:
            await self._sizes.aclose()

    def retain(self, names_: Iterable[str]) -> None:
        kept = set(names_)
        for name in [n for n in self._given if n not in kept]:
            del self._given[name]
        self._agents.retain(kept)

    async def _node_sizes(self, need: Need) -> Mapping[str, int]:
        agent = self._pool.get(need.backend.spec)
        if not isinstance(agent, base.WeightsSizer):
            return {}
        return await self._agents.lookup(need.backend.name, agent, _missing(need))

    def _given_view(self, need: Need, capacity: planview.Capacity) -> planview.BackendView:
        """The view with ``capacity``: the one given last time when nothing changed."""
        held = self._given.get(need.view.name)
        if held is not None and held[0] is need.view and held[1].capacity == capacity:
            return held[1]
        view = dataclasses.replace(need.view, capacity=capacity)
        self._given[need.view.name] = (need.view, view)
        return view


def _ollama(need: Need, known: Mapping[str, int]) -> planview.Capacity:
    total = need.backend.spec.disk_bytes or 0
    observation = need.observation
    assert observation is not None  # _missing is empty without one
    used = sum(m.size if m.size is not None else known.get(m.name, 0) for m in observation.models)
    used += sum(known.get(model, 0) for model in _in_flight(need))
    return planview.Capacity(total, total - used, _sizes(need, known))


def _node(need: Need, needed: Mapping[str, int]) -> planview.Capacity:
    observation = need.observation
    assert observation is not None  # _missing is empty without one
    remaining = sum(
        max((j.progress.total or 0) - (j.progress.completed or 0), 0) for j in need.jobs if j.active
    )
    if observation.disk is not None:
        total, free = observation.disk.total, observation.disk.free
    else:
        total = need.backend.spec.disk_bytes or 0
        free = total - sum(m.size or 0 for m in observation.models)
    return planview.Capacity(total, free - remaining, _sizes(need, needed))


def _sizes(need: Need, known: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    found = [(names.key(m, need.view.type), known[m]) for m in _missing(need) if m in known]
    return tuple(sorted(found))


def _missing(need: Need) -> tuple[str, ...]:
    """Declared models to admit: not served and no download of them under way."""
    view = need.view
    observation = need.observation
    known_disk = need.backend.spec.disk_bytes is not None or (
        view.type is _NODE and observation is not None and observation.disk is not None
    )
    if not known_disk or view.observed is None or view.observed.stale or not view.can_pull:
        return ()
    served = {names.key(m.name, view.type) for m in view.observed.models}
    active = {names.key(j.model_key, view.type) for j in need.jobs if j.active}
    return tuple(
        m.name for m in view.desired if names.key(m.name, view.type) not in served | active
    )


def _in_flight(need: Need) -> tuple[str, ...]:
    return tuple(j.model for j in need.jobs if j.active)


def _observed_without_size(need: Need) -> tuple[base.ObservedModel, ...]:
    observation = need.observation
    return () if observation is None else tuple(m for m in observation.models if m.size is None)

"""What the backend cycle reuses from its previous pass, so a steady fleet costs O(backends).

`Reuse` keeps, per backend, the planner's view and the built `LLMState` with what they were made
from, and hands them back when the inputs are the same objects (an Ollama adapter returns the
very same `Observation` while the node's listings are unchanged; the view) and the rest compares
equal (desired key, overrides, probe record, actions, jobs); only `last_ok_at` is replaced. The
per-model work is thus done only for backends whose observation or desired state changed. The
plan's own reuse is `plan.compute(previous=...)`.

Called by `runtimestate.reconcile.cycle` only. Pure bookkeeping: no I/O, no clock. What it
returns is always what `planview.backend_view` and `conditions.build` return for the same
inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from runtimestate import backends, desired, snapshot
from runtimestate.backends import base
from runtimestate.desired import spec
from runtimestate.reconcile import conditions, planview


@dataclasses.dataclass(frozen=True, slots=True)
class _View:
    usable: base.Observation | None  # compared by identity
    stale: bool
    desired_key: tuple[object, ...]
    prune: spec.PrunePolicy
    view: planview.BackendView
    warmth: tuple[object, ...] = ()  # preloaded and pending keys (issue 16)


@dataclasses.dataclass(frozen=True, slots=True)
class _State:
    usable: base.Observation | None  # compared by identity, as is the view
    view: planview.BackendView
    rest: tuple[object, ...]
    state: snapshot.LLMState


K = TypeVar("K")
V = TypeVar("V")
_KEPT_OVERRIDES = 16  # mappings of the last reads: four backend types, a few reads each

# Every node of a fleet serves the same few (name, loaded, parent) triples: one object each, not one
# per model per node (fewer objects for the garbage collector to walk, too).
_served = functools.lru_cache(maxsize=16384)(planview.ServedModel)


def observed_view(usable: base.Observation, stale: bool) -> planview.ObservedView:
    """The planner's view of an observation: its models, and a node agent's instances and
    free GPUs."""
    served = tuple(
        _served(m.name, m.loaded, m.size, m.size_vram, m.details.parent_model)
        for m in usable.models
    )
    instances = tuple(
        planview.InstanceView(i.name, i.weights, i.state.value, i.engine, i.last_error)
        for i in usable.instances
    )
    free = usable.gpus.free if usable.gpus is not None else None
    return planview.ObservedView(served, stale=stale, instances=instances, gpus_free=free)


class Reuse:
    """Per-backend views and states of the last cycle; one per `cycle.BackendCycle`."""

    def __init__(self) -> None:
        self._views: dict[str, _View] = {}
        self._states: dict[str, _State] = {}
        # id(mapping read) -> (that mapping, the equal one handed out first); a few per read
        self._overrides: dict[int, tuple[Mapping[Any, Any], Mapping[Any, Any]]] = {}

    def overrides(self, given: Mapping[K, V]) -> Mapping[K, V]:
        """``given``, or an equal mapping handed out for an earlier read of the desired state.

        Each read builds new override mappings (one per backend type); handing back the one
        a held state was built from turns `state`'s comparison of them, once per backend,
        into an identity check. Compared by content once per mapping read."""
        found = self._overrides.get(id(given))
        if found is not None and found[0] is given:
            return found[1]
        kept = next((k for _, k in self._overrides.values() if k == given), given)
        self._overrides[id(given)] = (given, kept)
        while len(self._overrides) > _KEPT_OVERRIDES:  # the oldest reads go first
            del self._overrides[next(iter(self._overrides))]
        return kept

    def view(
        self,
        state: desired.DesiredState,
        backend: spec.Backend,
        usable: base.Observation | None,
        stale: bool,
        preloaded: frozenset[str] = frozenset(),
        pending: frozenset[str] = frozenset(),
    ) -> planview.BackendView:
        """`planview.backend_view` of the backend given its usable observation, reused when
        the observation is the same object and the desired state has the same key (which
        covers the adapters placed and the budgets), and so are what llmctl preloaded and the
        pending preloads."""
        name = backend.name
        key = state.key_of(name)
        held = self._views.get(name)
        warmth = (preloaded, pending)
        if (
            held is not None
            and held.usable is usable
            and held.stale == stale
            and held.prune is backend.spec.prune
            and held.desired_key == key
            and held.warmth == warmth
        ):
            return held.view
        observed = None if usable is None else observed_view(usable, stale)
        able = backends.capabilities(backend.spec.type)
        view = planview.backend_view(
            state, backend, observed, can_pull=able.can_pull, can_delete=able.can_delete,
            runs_instances=able.runs_instances, can_preload=able.can_preload,
            preloaded=preloaded, pending=pending, can_load_lora=able.can_load_lora,
        )  # fmt: skip
        self._views[name] = _View(usable, stale, key, backend.spec.prune, view, warmth)
        return view

    def state(
        self,
        inputs: conditions.Inputs,
        phase: snapshot.Phase,
        view: planview.BackendView,
        build: Callable[[], snapshot.LLMState],
    ) -> snapshot.LLMState:
        """The backend's state: ``build()`` (`conditions.build` of ``inputs`` with the desired
        models filled in) unless every input it reads is what it was: the view (served models,
        and desired models through the declarations), the declared overrides, the usable
        observation, the record's outcome, the phase, the actions, the jobs, the observed
        generation, the backend's identity fields and the starts its agent refused."""
        record, backend, usable = inputs.record, inputs.backend, inputs.usable
        failing = record.failures > 0
        rest = (
            phase,
            failing,
            record.last_ok_at is None,
            (record.last_reason, record.last_error) if failing else None,
            tuple(inputs.actions),
            tuple(inputs.jobs),
            inputs.observed_generation,
            (backend.meta.id, backend.spec.type, backend.spec.url),
            inputs.overrides,  # of every declared model: served here need not be desired
            tuple(sorted(inputs.refused.items())),
        )
        held = self._states.get(backend.name)
        if held is not None and held.usable is usable and held.view is view and held.rest == rest:
            built = held.state
            if built.last_ok_at != record.last_ok_at:
                built = dataclasses.replace(built, last_ok_at=record.last_ok_at)
        else:
            built = build()
        self._states[backend.name] = _State(usable, view, rest, built)
        return built

    def retain(self, names: Collection[str]) -> None:
        """Forget backends that are no longer declared."""
        for table in (self._views, self._states):
            for name in [n for n in table if n not in names]:
                del table[name]

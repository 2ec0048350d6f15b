"""What the backend cycle reuses between passes: desired-state keys, views and states."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from typing import Any

import pytest

from runtimestate import backends, desired, snapshot
from runtimestate.backends import base, vllm
from runtimestate.desired import spec
from runtimestate.reconcile import conditions, planview, probing, reuse

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POLICY = probing.Policy()


def _meta(id_: int, generation: int = 1) -> spec.Meta:
    return spec.Meta(id_, generation, T0, T0)


def _state(
    *,
    models: tuple[spec.Model, ...] = (),
    pool_models: tuple[str, ...] = ("llama3", "qwen2:0.5b"),
    pool_generation: int = 1,
    backend_id: int = 1,
    backend_type: spec.BackendType = spec.BackendType.OLLAMA,
) -> desired.DesiredState:
    models = models or (
        spec.Model(spec.ModelSpec("llama3"), _meta(1)),
        spec.Model(spec.ModelSpec("qwen2:0.5b"), _meta(2)),
    )
    backends = (
        spec.Backend(spec.BackendSpec("gpu-0", backend_type, "http://a"), _meta(backend_id)),
        spec.Backend(spec.BackendSpec("gpu-1", spec.BackendType.OLLAMA, "http://b"), _meta(9)),
    )
    pool = spec.Pool(
        spec.PoolSpec("main", backends=("gpu-0", "gpu-1"), models=pool_models),
        _meta(1, pool_generation),
    )
    return desired.DesiredState(backends, models, (pool,))


CHANGES: dict[str, dict[str, Any]] = {
    "a model's spec (an override)": dict(
        models=(
            spec.Model(spec.ModelSpec("llama3", context_length=8192), _meta(1, 2)),
            spec.Model(spec.ModelSpec("qwen2:0.5b"), _meta(2)),
        )
    ),
    "a model's generation alone": dict(
        models=(
            spec.Model(spec.ModelSpec("llama3"), _meta(1, 2)),
            spec.Model(spec.ModelSpec("qwen2:0.5b"), _meta(2)),
        )
    ),
    "the pool's members": dict(pool_models=("llama3",), pool_generation=2),
    "the pool's generation alone": dict(pool_generation=2),
    "the backend's identity": dict(backend_id=5),
    "the backend's type": dict(backend_type=spec.BackendType.VLLM),
}


def test_a_state_read_again_has_the_same_key_per_backend() -> None:
    assert _state().key_of("gpu-0") == _state().key_of("gpu-0")
    assert _state().key_of("gpu-0") != _state().key_of("gpu-1")
    assert _state().key_of("unknown") == (None, ())


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_any_change_of_what_a_backend_should_serve_changes_its_key(change: str) -> None:
    assert _state(**CHANGES[change]).key_of("gpu-0") != _state().key_of("gpu-0")


def test_pools_of_backend_are_indexed_once_and_in_pool_order() -> None:
    state = _state()
    assert state.pools_of_backend("gpu-0") == ("main",)
    assert state.pools_of_backend("nobody") == ()


def _observation(*names: str) -> base.Observation:
    return base.Observation(tuple(base.ObservedModel(n, n) for n in names), healthy=True)


def test_a_view_is_reused_only_for_the_same_observation_and_desired_key() -> None:
    kept, state = reuse.Reuse(), _state()
    backend = state.backends[0]
    seen = _observation("llama3:latest")
    first = kept.view(state, backend, seen, stale=False)
    assert kept.view(_state(), backend, seen, stale=False) is first
    assert first == planview.backend_view(
        state,
        backend,
        planview.ObservedView((planview.ServedModel("llama3:latest"),)),
        can_pull=True,
        can_delete=True,
        can_preload=True,
    )
    assert kept.view(state, backend, _observation("llama3:latest"), stale=False) is not first
    changed = _state(pool_models=("llama3",), pool_generation=2)
    assert kept.view(changed, changed.backends[0], seen, stale=False).desired != first.desired
    assert kept.view(state, backend, seen, stale=True).observed == dataclasses.replace(
        first.observed, stale=True
    )


def test_a_view_is_rebuilt_when_the_preloaded_or_pending_sets_or_the_vram_budget_change() -> None:
    kept, state = reuse.Reuse(), _state()
    backend = state.backends[0]
    seen = _observation("llama3:latest")
    first = kept.view(state, backend, seen, stale=False)
    again = kept.view(state, backend, seen, False, frozenset({"llama3:latest"}))
    assert again.preloaded == {"llama3:latest"}
    pending = kept.view(state, backend, seen, False, again.preloaded, frozenset({"x:1"}))
    assert pending.pending == {"x:1"}
    budget = dataclasses.replace(backend, spec=dataclasses.replace(backend.spec, vram_bytes=5))
    read = dataclasses.replace(state, backends=(budget,))  # the next read declares the budget
    assert kept.view(read, budget, seen, False, again.preloaded, pending.pending).vram_bytes == 5
    assert first.preloaded == first.pending == frozenset()


def test_a_state_is_rebuilt_when_an_input_changes_and_only_last_ok_at_moves_otherwise() -> None:
    kept, state = reuse.Reuse(), _state()
    backend = state.backends[0]
    seen = _observation("llama3:latest")
    view = kept.view(state, backend, seen, stale=False)
    builds: list[snapshot.LLMState] = []

    def build(inputs: conditions.Inputs) -> snapshot.LLMState:
        built = conditions.build(inputs, T0, POLICY)
        builds.append(built)
        return built

    def at(moment: dt.datetime, record: probing.Record[base.Observation]) -> snapshot.LLMState:
        inputs = conditions.Inputs(backend, record, record.usable(moment, POLICY), (), (), 1)
        return kept.state(inputs, record.phase(moment, POLICY), view, lambda: build(inputs))

    first = at(T0, probing.succeeded(probing.Record(), seen, T0))
    later = T0 + dt.timedelta(seconds=30)
    second = at(later, probing.succeeded(probing.Record(), seen, later))
    assert len(builds) == 1
    assert second.last_ok_at == later
    assert second.pulled_models is first.pulled_models
    ok = probing.succeeded(probing.Record(), seen, later)
    failing = probing.failed(ok, "boom", "timeout", later, POLICY, random.Random(1))
    third = at(later, failing)
    assert len(builds) == 2
    assert third.phase is snapshot.Phase.DEGRADED


@pytest.mark.parametrize("kind", list(spec.BackendType))
def test_the_planners_view_can_pull_and_delete_exactly_as_the_adapter_declares(
    kind: spec.BackendType,
) -> None:
    state = _state(backend_type=kind)
    view = reuse.Reuse().view(state, state.backends[0], None, stale=False)
    declared = backends.capabilities(kind)
    assert (view.can_pull, view.can_delete) == (declared.can_pull, declared.can_delete)
    assert view.can_pull is (kind in (spec.BackendType.OLLAMA, spec.BackendType.NODE))


def test_an_adapter_that_learns_to_pull_is_planned_for_without_touching_the_planner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "Which types can pull" lives only in the adapters' declared capabilities.
    monkeypatch.setattr(
        vllm.VllmBackend, "capabilities", base.Capabilities(can_pull=True, can_delete=True)
    )
    state = _state(backend_type=spec.BackendType.VLLM)
    view = reuse.Reuse().view(state, state.backends[0], None, stale=False)
    assert (view.type, view.can_pull, view.can_delete) == (spec.BackendType.VLLM, True, True)

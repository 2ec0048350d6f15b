"""Declared capabilities and context lengths win wherever a model is served, desired or not."""

from __future__ import annotations

import datetime as dt

import pytest

from runtimestate import desired, snapshot
from runtimestate.backends import base
from runtimestate.desired import spec
from runtimestate.reconcile import conditions, probing, reuse

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POLICY = probing.Policy()
CHAT = (spec.Capability.CHAT,)
REPORTED = frozenset({spec.Capability.CHAT, spec.Capability.PROMPT, spec.Capability.STREAM})


def _meta(id_: int, generation: int = 1) -> spec.Meta:
    return spec.Meta(id_, generation, T0, T0)


def _fleet(
    declared: spec.ModelSpec, pools: dict[str, tuple[str, ...]], type_: spec.BackendType
) -> desired.DesiredState:
    """Backends here (``type_``), other-0 and other-1; ``declared`` plus one plain model; each
    pool ``{name: backends}`` holds ``declared``."""
    backends = tuple(
        spec.Backend(spec.BackendSpec(name, kind, f"http://{name}"), _meta(i))
        for i, (name, kind) in enumerate(
            [("here", type_), ("other-0", spec.BackendType.OLLAMA), ("other-1", type_)], 1
        )
    )
    models = (
        spec.Model(declared, _meta(1)),
        spec.Model(spec.ModelSpec("plain"), _meta(2)),
    )
    pools = tuple(
        spec.Pool(spec.PoolSpec(name, backends=members, models=(declared.name,)), _meta(i))
        for i, (name, members) in enumerate(pools.items(), 1)
    )
    return desired.DesiredState(backends, models, pools)


def _shown(state: desired.DesiredState, served: str) -> snapshot.PulledModel:
    """The model ``served`` as the state of backend "here" shows it after one observation."""
    backend = state.backends[0]
    seen = base.Observation(
        (base.ObservedModel(served, served, context_length=32768, capabilities=REPORTED),),
        healthy=True,
    )
    record = probing.succeeded(probing.Record(), seen, T0)
    inputs = conditions.Inputs(
        backend, record, seen, (), (), 1, overrides=state.overrides(backend.spec.type)
    )
    (model,) = conditions.build(inputs, T0, POLICY).pulled_models
    return model


OLLAMA, VLLM, OPENAI = spec.BackendType.OLLAMA, spec.BackendType.VLLM, spec.BackendType.OPENAI
CASES: dict[str, tuple[spec.BackendType, spec.ModelSpec, dict[str, tuple[str, ...]], str, bool]] = {
    # name: (type of "here", declared, pools holding it, name served on "here", overridden)
    "desired here": (OLLAMA, spec.ModelSpec("llama3", None, CHAT), {"p": ("here",)}, "llama3", True),
    "desired only on other backends": (
        OLLAMA, spec.ModelSpec("llama3", None, CHAT), {"p": ("other-0", "other-1")},
        "llama3:latest", True,
    ),
    "declared in no pool": (OLLAMA, spec.ModelSpec("llama3", None, CHAT), {}, "llama3", True),
    "in a pool with no backends": (
        OLLAMA, spec.ModelSpec("Llama3:latest", None, CHAT), {"p": ()}, "library/llama3", True,
    ),
    "vLLM, desired elsewhere": (
        VLLM, spec.ModelSpec("org/m", None, CHAT), {"p": ("other-1",)}, "org/m", True,
    ),
    "vLLM names match exactly": (
        VLLM, spec.ModelSpec("org/m", None, CHAT), {"p": ("other-1",)}, "org/M", False,
    ),
    "openai, desired nowhere": (OPENAI, spec.ModelSpec("gpt-x", None, CHAT), {}, "gpt-x", True),
    "another model is not touched": (
        OLLAMA, spec.ModelSpec("llama3", None, CHAT), {"p": ("other-0",)}, "qwen2", False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_declared_capabilities_apply_wherever_the_model_is_served(case: str) -> None:
    type_, declared, pools, served, overridden = CASES[case]
    shown = _shown(_fleet(declared, pools, type_), served)
    flags = (shown.can_chat, shown.can_prompt, shown.can_stream)
    assert flags == ((True, False, False) if overridden else (True, True, True))


def test_a_declared_context_length_applies_on_a_backend_that_does_not_desire_the_model() -> None:
    state = _fleet(spec.ModelSpec("llama3", 4096), {"p": ("other-0",)}, OLLAMA)
    shown = _shown(state, "llama3")
    assert shown.context_length == 4096
    assert (shown.can_chat, shown.can_prompt) == (True, True)  # capabilities not declared


def test_a_changed_override_of_a_model_not_desired_here_rebuilds_the_state() -> None:
    kept = reuse.Reuse()
    before = _fleet(spec.ModelSpec("llama3"), {"p": ("other-0",)}, OLLAMA)
    after = _fleet(spec.ModelSpec("llama3", None, CHAT), {"p": ("other-0",)}, OLLAMA)
    backend = before.backends[0]
    seen = base.Observation(
        (base.ObservedModel("llama3", "llama3", capabilities=REPORTED),), healthy=True
    )
    record = probing.succeeded(probing.Record(), seen, T0)
    view = kept.view(before, backend, seen, stale=False)
    assert kept.view(after, backend, seen, stale=False) is view  # nothing desired here moved
    states = []
    for state in (before, after):
        inputs = conditions.Inputs(
            backend, record, seen, (), (), 1, overrides=state.overrides(backend.spec.type)
        )
        built = kept.state(inputs, snapshot.Phase.READY, view, lambda i=inputs: _build(i))
        states.append(built)
    assert [s.pulled_models[0].can_prompt for s in states] == [True, False]


def _build(inputs: conditions.Inputs) -> snapshot.LLMState:
    return conditions.build(inputs, T0, POLICY)


def test_equal_overrides_of_a_new_read_are_handed_back_as_the_mapping_held_states_saw() -> None:
    kept = reuse.Reuse()
    first = _fleet(spec.ModelSpec("llama3", None, CHAT), {"p": ("other-0",)}, OLLAMA)
    again = _fleet(spec.ModelSpec("llama3", None, CHAT), {"p": ("other-0",)}, OLLAMA)
    changed = _fleet(spec.ModelSpec("llama3", 4096, CHAT), {"p": ("other-0",)}, OLLAMA)
    kind = first.backends[0].spec.type
    assert again.overrides(kind) is not first.overrides(kind)  # each read builds its own
    handed = kept.overrides(first.overrides(kind))
    assert handed is first.overrides(kind)
    assert kept.overrides(again.overrides(kind)) is handed  # equal: one identity check later
    assert kept.overrides(again.overrides(kind)) is handed  # asked again: no comparison
    assert kept.overrides(changed.overrides(kind)) is changed.overrides(kind)


def test_a_state_is_not_rebuilt_for_equal_overrides_of_a_new_read() -> None:
    kept = reuse.Reuse()
    reads = [
        _fleet(spec.ModelSpec("llama3", None, CHAT), {"p": ("other-0",)}, OLLAMA) for _ in range(2)
    ]
    backend = reads[0].backends[0]
    seen = base.Observation(
        (base.ObservedModel("llama3", "llama3", capabilities=REPORTED),), healthy=True
    )
    record = probing.succeeded(probing.Record(), seen, T0)
    view = kept.view(reads[0], backend, seen, stale=False)
    builds = []
    for state in reads:
        overrides = kept.overrides(state.overrides(backend.spec.type))
        inputs = conditions.Inputs(backend, record, seen, (), (), 1, overrides=overrides)

        def build(i: conditions.Inputs = inputs) -> snapshot.LLMState:
            builds.append(i)
            return _build(i)

        kept.state(inputs, snapshot.Phase.READY, view, build)
    assert len(builds) == 1

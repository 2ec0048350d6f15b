"""The planner's LoRA adapter rules (issue 16), named as behaviour sentences."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from runtimestate import desired
from runtimestate.desired import spec
from runtimestate.reconcile import plan, planview, steps

VLLM = spec.BackendType.VLLM
R = steps.ReasonCode


def adapter(name: str, base: str = "base-7b", source: str | None = None) -> planview.DesiredAdapter:
    return planview.DesiredAdapter(name, base, source or f"/adapters/{name}")


def vllm(
    *,
    adapters: Iterable[planview.DesiredAdapter] = (),
    bases: Iterable[str] = ("base-7b",),
    loaded: Iterable[str] = (),
    prune: spec.PrunePolicy = spec.PrunePolicy.MANAGED,
    stale: bool = False,
    observed: bool = True,
    type: spec.BackendType = VLLM,
    in_pool: bool = True,
) -> planview.BackendView:
    models = [planview.ServedModel(b) for b in bases]
    models += [planview.ServedModel(a, parent="base-7b") for a in loaded]
    return planview.BackendView(
        name="gpu-1",
        type=type,
        prune=prune,
        desired=tuple(planview.DesiredModel(b, "d1") for b in bases) if in_pool else (),
        observed=planview.ObservedView(tuple(models), stale=stale) if observed else None,
        adapters=tuple(adapters),
        can_load_lora=type is VLLM,
        in_pool=in_pool,
    )


def rows(
    view: planview.BackendView,
    *,
    managed: Iterable[str] = (),
    refused: Iterable[tuple[str, str]] = (),
    complete: bool = True,
) -> list[tuple[str, str, str]]:
    record = planview.LoraRecord(frozenset(managed), tuple(sorted(refused)))
    decided = plan.compute([view], lora={view.name: record}, desired_complete=complete)
    found = [a for a in decided.actions if a.model != "base-7b"]  # the adapters' actions
    return [(type(a).__name__, a.model, a.reason.code.value) for a in found]


def test_a_placed_adapter_whose_base_is_served_and_not_loaded_is_loaded() -> None:
    decided = plan.compute([vllm(adapters=[adapter("sql", source="org/sql-lora")])])
    assert decided.actions == (
        steps.LoadAdapter("gpu-1", "sql", "base-7b", "org/sql-lora",
                          steps.Reason(R.ADAPTER_MISSING, "declared, not loaded")),
    )  # fmt: skip
    assert decided.mutating == decided.actions


def test_a_loaded_placed_adapter_needs_nothing() -> None:
    assert rows(vllm(adapters=[adapter("sql")], loaded=["sql"])) == []


def test_an_adapter_whose_base_model_is_not_served_is_drift_naming_the_base() -> None:
    decided = plan.compute([vllm(adapters=[adapter("sql", base="other-13b")])])
    (drift,) = decided.actions
    assert isinstance(drift, steps.ReportDrift)
    assert drift.kind is steps.DriftKind.ADAPTER_NOT_LOADED
    assert drift.reason.text == "declared, not loaded: base model other-13b not served here"


def test_nothing_is_loaded_on_a_stale_observation() -> None:
    assert rows(vllm(adapters=[adapter("sql")], stale=True)) == [
        ("ReportDrift", "sql", R.OBSERVATION_STALE.value)
    ]


def test_nothing_is_loaded_without_an_observation() -> None:
    assert rows(vllm(adapters=[adapter("sql")], observed=False)) == []


def test_an_adapter_placed_on_an_ollama_backend_is_drift_not_a_load() -> None:
    view = vllm(adapters=[adapter("sql")], type=spec.BackendType.OLLAMA)
    assert rows(view) == [("ReportDrift", "sql", R.CANNOT_LOAD_ADAPTERS.value)]


def test_a_refused_load_is_held_as_drift_with_the_servers_reason() -> None:
    view = vllm(adapters=[adapter("sql"), adapter("chat")])
    found = rows(view, refused=[("sql", "runtime LoRA updating is off")])
    assert found == [
        ("LoadAdapter", "chat", R.ADAPTER_MISSING.value),
        ("ReportDrift", "sql", R.LOAD_REFUSED.value),
    ]


def test_managed_unloads_only_adapters_llmctl_loaded() -> None:
    view = vllm(loaded=["mine", "theirs"])
    assert rows(view, managed=["mine"]) == [
        ("UnloadAdapter", "mine", R.ADAPTER_UNDECLARED.value),
        ("ReportDrift", "theirs", R.NOT_MANAGED.value),
    ]


def test_prune_all_unloads_any_adapter_placed_nowhere() -> None:
    view = vllm(loaded=["theirs"], prune=spec.PrunePolicy.ALL)
    assert rows(view) == [("UnloadAdapter", "theirs", R.ADAPTER_UNDECLARED.value)]


def test_prune_none_keeps_every_loaded_adapter_as_drift() -> None:
    view = vllm(loaded=["mine"], prune=spec.PrunePolicy.NONE)
    assert rows(view, managed=["mine"]) == [("ReportDrift", "mine", R.PRUNE_NONE.value)]


def test_nothing_is_unloaded_when_the_desired_state_was_read_incompletely() -> None:
    assert rows(vllm(loaded=["mine"]), managed=["mine"], complete=False) == []


def test_a_backend_in_no_pool_keeps_its_adapters() -> None:
    view = vllm(loaded=["mine"], in_pool=False)
    assert rows(view, managed=["mine"]) == [("ReportDrift", "mine", R.NOT_IN_POOL.value)]


def test_a_loaded_adapter_is_not_taken_for_an_undeclared_model() -> None:
    view = vllm(adapters=[adapter("sql")], loaded=["sql"], prune=spec.PrunePolicy.ALL)
    assert rows(view) == []


def test_unloads_come_before_loads_on_a_backend() -> None:
    view = vllm(adapters=[adapter("a-new")], loaded=["z-old"], prune=spec.PrunePolicy.ALL)
    assert [r[0] for r in rows(view)] == ["UnloadAdapter", "LoadAdapter"]


def test_a_decision_is_not_reused_once_llmctl_records_a_load() -> None:
    view = vllm(loaded=["mine"])
    first = plan.compute([view])
    again = plan.compute(
        [view], previous=first, lora={"gpu-1": planview.LoraRecord(frozenset({"mine"}))}
    )
    assert [type(a).__name__ for a in again.actions] == ["UnloadAdapter"]


def _meta() -> spec.Meta:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return spec.Meta(1, 1, at, at)


def test_the_view_places_the_adapters_of_the_backends_pools() -> None:
    backend = spec.Backend(spec.BackendSpec("gpu-1", VLLM, "http://h:8000/v1"), _meta())
    lora = spec.Adapter(spec.AdapterSpec("sql", "base-7b", "org/sql"), _meta())
    unplaced = spec.Adapter(spec.AdapterSpec("chat", "base-7b", "org/chat"), _meta())
    pool = spec.Pool(spec.PoolSpec("p", backends=("gpu-1",), adapters=("sql",)), _meta())
    state = desired.DesiredState((backend,), (), (pool,), adapters=(lora, unplaced))
    view = planview.backend_view(
        state, backend, None, can_pull=False, can_delete=False, can_load_lora=True
    )
    assert view.adapters == (planview.DesiredAdapter("sql", "base-7b", "org/sql"),)

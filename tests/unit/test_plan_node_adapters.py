"""The planner's LoRA adapter rules on node agents (issue 16), named as behaviour sentences.

A node serves a model through its instance: an adapter is loaded where its base model's
instance is ready and runs the declared engine, which must enable LoRA.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from runtimestate.desired import engineargs, spec
from runtimestate.reconcile import plan, planview, steps

NODE = spec.BackendType.NODE
BASE = "org/base-7b"
LORA = engineargs.VllmArgs(enable_lora=True)


def node(
    *,
    vllm: engineargs.VllmArgs | None = LORA,
    state: str = planview.READY,
    engine: str | None = None,
    loaded: Iterable[str] = (),
    adapters: Iterable[str] = ("sql",),
) -> planview.BackendView:
    model = planview.DesiredModel(BASE, "d1", vllm)
    running = planview.InstanceView(BASE, BASE, state, model.engine if engine is None else engine)
    models = [planview.ServedModel(BASE, loaded=True)]
    models += [planview.ServedModel(a, loaded=True, parent=BASE) for a in loaded]
    models += [planview.ServedModel("org/sql-lora")]  # the adapter's files in the agent's cache
    return planview.BackendView(
        name="gpu-node",
        type=NODE,
        prune=spec.PrunePolicy.ALL,
        can_pull=True,
        can_delete=True,
        desired=(model,),
        observed=planview.ObservedView(tuple(models), instances=(running,), gpus_free=0),
        runs_instances=True,
        adapters=tuple(planview.DesiredAdapter(a, BASE, "org/sql-lora") for a in adapters),
        can_load_lora=True,
    )


def adapter_actions(view: planview.BackendView) -> list[steps.Action]:
    decided = plan.compute([view])
    return [a for a in decided.actions if a.model == "sql" or a.model == "org/sql-lora"]


def test_an_adapter_is_loaded_into_the_ready_instance_of_its_base_model() -> None:
    (action,) = adapter_actions(node())
    assert action == steps.LoadAdapter(
        "gpu-node", "sql", BASE, "org/sql-lora",
        steps.Reason(steps.ReasonCode.ADAPTER_MISSING, "declared, not loaded"),
    )  # fmt: skip


def test_an_adapter_whose_base_model_runs_without_lora_is_drift_naming_the_setting() -> None:
    (drift,) = adapter_actions(node(vllm=None, loaded=()))
    assert isinstance(drift, steps.ReportDrift)
    assert drift.reason.code is steps.ReasonCode.LORA_NOT_ENABLED
    assert drift.reason.text == (
        "declared, not loaded: model org/base-7b is not started with vllm.enableLora"
    )


def test_an_adapter_waits_while_its_base_instance_starts_or_restarts_for_new_arguments() -> None:
    for view in (node(state=planview.STARTING), node(engine="an older engine")):
        loads = [a for a in adapter_actions(view) if isinstance(a, steps.LoadAdapter)]
        drift = [a for a in adapter_actions(view) if isinstance(a, steps.ReportDrift)]
        assert loads == []
        assert drift[0].reason.code is steps.ReasonCode.BASE_NOT_SERVED


def test_a_loaded_adapter_needs_nothing_and_its_files_are_not_pruned() -> None:
    assert adapter_actions(node(loaded=["sql"])) == []


def test_an_adapter_placed_nowhere_on_the_node_is_unloaded_from_its_instance() -> None:
    actions = adapter_actions(node(loaded=["sql"], adapters=()))
    assert [type(a).__name__ for a in actions if a.model == "sql"] == ["UnloadAdapter"]


def test_an_adapter_declared_at_a_revision_is_loaded_at_that_revision() -> None:
    pinned = planview.DesiredAdapter("sql", BASE, "org/sql-lora", "v2")
    view = dataclasses.replace(node(adapters=()), adapters=(pinned,))
    (action,) = adapter_actions(view)
    assert isinstance(action, steps.LoadAdapter)
    assert (action.source, action.revision) == ("org/sql-lora", "v2")

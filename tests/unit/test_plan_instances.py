"""The planner's rules for node agents' instances (`runtimestate.reconcile.instances`): starts,
GPU placement, restarts rolling across the fleet, stops, and the prune a stop frees."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Iterable

from runtimestate import desired
from runtimestate.backends import base
from runtimestate.desired import engineargs, spec
from runtimestate.reconcile import plan, planview, reuse, steps

NODE = spec.BackendType.NODE
MANAGED = spec.PrunePolicy.MANAGED
C = steps.ReasonCode
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
LLAMA = "meta-llama/Llama-3.2-1B"
TP2 = engineargs.VllmArgs(tensor_parallel_size=2)
LONG = engineargs.VllmArgs(max_model_len=8192)

Row = tuple[str, str, str, str]  # (action, backend, model, reason code)
Wanted = str | tuple[str, engineargs.VllmArgs | None]


def instance(
    name: str, state: str = planview.READY, vllm: engineargs.VllmArgs | None = None
) -> planview.InstanceView:
    """An instance running ``vllm`` (its fingerprint, as the agent reports it)."""
    engine = engineargs.fingerprint(engineargs.agent_body(vllm))
    return planview.InstanceView(
        name, name, state, engine, "exited 1" if state != "ready" else None
    )


def agent(
    name: str = "gpu-1",
    *,
    wanted: Iterable[Wanted] = (),
    weights: Iterable[str] = (),
    running: Iterable[planview.InstanceView] = (),
    free: int | None = None,
    prune: spec.PrunePolicy = MANAGED,
    stale: bool = False,
    in_pool: bool = True,
) -> planview.BackendView:
    """A node backend's view: weights are loaded when an instance runs from them."""
    instances = tuple(running)
    busy = {i.weights for i in instances}
    models = tuple(planview.ServedModel(w, loaded=w in busy) for w in weights)
    declared = [(w, None) if isinstance(w, str) else w for w in wanted]
    return planview.BackendView(
        name=name, type=NODE, prune=prune, can_pull=True, can_delete=True,
        desired=tuple(planview.DesiredModel(m, "d1", vllm) for m, vllm in declared),
        observed=planview.ObservedView(models, stale, instances, free),
        in_pool=in_pool, runs_instances=True,
    )  # fmt: skip


def rows(result: plan.Plan) -> list[Row]:
    out: list[Row] = []
    for action in result.actions:
        kind = (
            action.kind.value
            if isinstance(action, steps.ReportDrift)
            else type(action).__name__.lower()
        )
        out.append((kind, action.backend, action.model, action.reason.code.value))
    return out


def texts(result: plan.Plan, code: steps.ReasonCode) -> list[str]:
    return [a.reason.text for a in result.actions if a.reason.code is code]


def test_a_desired_model_without_weights_is_pulled_before_any_instance_starts() -> None:
    result = plan.compute([agent(wanted=[QWEN], free=1)])
    assert rows(result) == [("pull", "gpu-1", QWEN, "missing")]


def test_weights_present_and_no_instance_start_one_with_the_declared_engine_arguments() -> None:
    result = plan.compute([agent(wanted=[(QWEN, LONG)], weights=[QWEN], free=1)])
    (start,) = result.mutating
    assert start == steps.StartInstance(
        "gpu-1", QWEN, QWEN, LONG, steps.Reason(C.NO_INSTANCE, "weights present, no instance")
    )


def test_a_start_waits_for_a_fresh_observation() -> None:
    result = plan.compute([agent(wanted=[QWEN], weights=[QWEN], free=1, stale=True)])
    assert rows(result) == [("declared_not_served", "gpu-1", QWEN, "observation_stale")]


def test_two_models_needing_one_gpu_on_a_one_gpu_node_start_one_and_hold_the_other() -> None:
    result = plan.compute([agent(wanted=[QWEN, LLAMA], weights=[QWEN, LLAMA], free=1)])
    assert rows(result) == [
        ("startinstance", "gpu-1", QWEN, "no_instance"),  # model-name order: "Q" < "m"
        ("declared_not_served", "gpu-1", LLAMA, "unplaceable"),
    ]
    assert texts(result, C.UNPLACEABLE) == ["needs 1 GPU, 0 free"]


def test_freeing_the_gpu_starts_the_held_model() -> None:
    result = plan.compute([agent(wanted=[QWEN], weights=[QWEN, LLAMA], free=1)])
    assert [type(a) for a in result.mutating] == [steps.StartInstance]


def test_an_instance_needs_its_declared_gpus_else_its_tensor_parallel_size_else_one() -> None:
    assert planview.DesiredModel(QWEN, "d").gpus_needed == 1
    assert planview.DesiredModel(QWEN, "d", TP2).gpus_needed == 2
    assert planview.DesiredModel(QWEN, "d", engineargs.VllmArgs(gpus=3)).gpus_needed == 3
    assert planview.DesiredModel(QWEN, "d", engineargs.VllmArgs(gpus=0)).gpus_needed == 0
    result = plan.compute([agent(wanted=[(QWEN, TP2)], weights=[QWEN], free=1)])
    assert texts(result, C.UNPLACEABLE) == ["needs 2 GPUs, 1 free"]


def test_without_a_reported_gpu_inventory_the_agent_places_the_start() -> None:
    result = plan.compute([agent(wanted=[QWEN, LLAMA], weights=[QWEN, LLAMA], free=None)])
    assert [type(a) for a in result.mutating] == [steps.StartInstance, steps.StartInstance]


def test_starting_ready_and_crash_looping_instances_with_the_declared_arguments_are_left_alone() -> (
    None
):
    for state in (planview.STARTING, planview.READY, planview.CRASH_LOOP):
        view = agent(wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN, state, LONG)])
        assert plan.compute([view]).actions == (), state


def test_changed_engine_arguments_restart_the_instance_with_the_declared_ones() -> None:
    view = agent(wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN)], free=0)
    (restart,) = plan.compute([view]).mutating
    assert restart == steps.RestartInstance(
        "gpu-1", QWEN, QWEN, LONG, steps.Reason(C.ENGINE_CHANGED, "engine arguments changed")
    )


def test_an_instance_whose_agent_reports_no_spec_is_never_restarted() -> None:
    unknown = dataclasses.replace(instance(QWEN), engine="")
    view = agent(wanted=[(QWEN, LONG)], weights=[QWEN], running=[unknown])
    assert plan.compute([view]).actions == ()


def test_a_restart_waits_for_a_fresh_observation() -> None:
    view = agent(wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN)], stale=True)
    assert rows(plan.compute([view])) == [
        ("declared_not_served", "gpu-1", QWEN, "observation_stale")
    ]


def test_an_undeclared_instance_llmctl_started_is_stopped_and_its_weights_pruned_after() -> None:
    view = agent(wanted=[LLAMA], weights=[QWEN, LLAMA], running=[instance(QWEN), instance(LLAMA)])
    result = plan.compute([view], managed={("gpu-1", QWEN)})
    assert rows(result) == [
        ("stopinstance", "gpu-1", QWEN, "undeclared_managed"),
        ("prune", "gpu-1", QWEN, "undeclared_managed"),
    ]


def test_under_prune_none_an_instance_llmctl_started_is_stopped_and_its_weights_stay() -> None:
    view = agent(
        wanted=[LLAMA], weights=[QWEN, LLAMA], running=[instance(QWEN)],
        prune=spec.PrunePolicy.NONE,
    )  # fmt: skip
    result = plan.compute([view], managed={("gpu-1", QWEN)})
    assert rows(result) == [
        ("stopinstance", "gpu-1", QWEN, "undeclared_managed"),
        ("startinstance", "gpu-1", LLAMA, "no_instance"),
        ("served_not_declared", "gpu-1", QWEN, "prune_none"),
    ]


def test_under_prune_none_an_instance_llmctl_did_not_start_keeps_running() -> None:
    view = agent(
        wanted=[LLAMA], weights=[QWEN, LLAMA], running=[instance(QWEN), instance(LLAMA)],
        prune=spec.PrunePolicy.NONE,
    )  # fmt: skip
    result = plan.compute([view])
    assert rows(result) == [("served_not_declared", "gpu-1", QWEN, "prune_none")]
    assert result.actions[0].reason.text == "prune: none"


def test_removing_the_last_model_stops_its_instance_and_keeps_the_weights_under_managed() -> None:
    # Nothing is declared on the backend any more: weights stay (only prune: all empties a
    # backend), but the instance llmctl started no longer holds the GPU.
    view = agent(weights=[QWEN], running=[instance(QWEN)])
    result = plan.compute([view], managed={("gpu-1", QWEN)})
    assert rows(result) == [
        ("stopinstance", "gpu-1", QWEN, "undeclared_managed"),
        ("served_not_declared", "gpu-1", QWEN, "empty_desired"),
    ]


def test_under_managed_an_instance_llmctl_did_not_start_keeps_running_and_its_weights_stay() -> (
    None
):
    view = agent(wanted=[LLAMA], weights=[QWEN, LLAMA], running=[instance(QWEN), instance(LLAMA)])
    assert rows(plan.compute([view])) == [("served_not_declared", "gpu-1", QWEN, "not_managed")]


def test_prune_all_stops_every_undeclared_instance_even_with_nothing_declared() -> None:
    view = agent(weights=[QWEN], running=[instance(QWEN)], prune=spec.PrunePolicy.ALL)
    assert rows(plan.compute([view])) == [
        ("stopinstance", "gpu-1", QWEN, "undeclared"),
        ("prune", "gpu-1", QWEN, "undeclared"),
    ]


def test_an_instance_without_listed_weights_is_reported_as_drift_when_kept() -> None:
    view = agent(wanted=[LLAMA], weights=[LLAMA], running=[instance(QWEN), instance(LLAMA)])
    assert rows(plan.compute([view])) == [("served_not_declared", "gpu-1", QWEN, "not_managed")]


def test_nothing_is_stopped_on_a_backend_in_no_pool_a_stale_view_or_an_incomplete_read() -> None:
    managed = {("gpu-1", QWEN)}
    running = [instance(QWEN), instance(LLAMA)]
    outside = agent(weights=[QWEN], running=running[:1], in_pool=False)
    stale = agent(wanted=[LLAMA], weights=[QWEN, LLAMA], running=running, stale=True)
    fresh = agent(wanted=[LLAMA], weights=[QWEN, LLAMA], running=running)
    for view, complete in ((outside, True), (stale, True), (fresh, False)):
        result = plan.compute([view], managed=managed, desired_complete=complete)
        assert result.mutating == (), rows(result)


def test_a_rolling_restart_changes_one_copy_of_a_model_per_cycle() -> None:
    views = [
        agent(f"gpu-{n}", wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN)])
        for n in (1, 2, 3)
    ]
    result = plan.compute(views)
    assert rows(result) == [
        ("restartinstance", "gpu-1", QWEN, "engine_changed"),
        ("declared_not_served", "gpu-2", QWEN, "restart_waits"),
        ("declared_not_served", "gpu-3", QWEN, "restart_waits"),
    ]
    assert texts(result, C.RESTART_WAITS)[0] == (
        "restart waits: one copy at a time, gpu-1 restarts first"
    )


def test_a_restart_waits_while_another_copy_of_the_model_is_not_ready() -> None:
    restarted = agent(
        "gpu-1", wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN, "starting", LONG)]
    )
    old = agent("gpu-2", wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN)])
    result = plan.compute([restarted, old])
    assert rows(result) == [("declared_not_served", "gpu-2", QWEN, "restart_waits")]
    assert texts(result, C.RESTART_WAITS) == ["restart waits for the copy on gpu-1 to be ready"]
    ready = dataclasses.replace(
        restarted, observed=agent(weights=[QWEN], running=[instance(QWEN, vllm=LONG)]).observed
    )
    assert [type(a) for a in plan.compute([ready, old]).mutating] == [steps.RestartInstance]


def test_crash_looping_instances_are_restarted_without_waiting_for_the_others() -> None:
    def looping(name: str) -> planview.BackendView:
        running = [instance(QWEN, planview.CRASH_LOOP)]
        return agent(name, wanted=[(QWEN, LONG)], weights=[QWEN], running=running)

    healthy = agent("gpu-3", wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN)])
    assert rows(plan.compute([looping("gpu-1"), looping("gpu-2"), healthy])) == [
        ("restartinstance", "gpu-1", QWEN, "crash_loop"),
        ("restartinstance", "gpu-2", QWEN, "crash_loop"),
        ("declared_not_served", "gpu-3", QWEN, "restart_waits"),
    ]


def test_a_backends_share_shows_its_deferred_restart_as_drift() -> None:
    views = [
        agent(f"gpu-{n}", wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN)])
        for n in (1, 2)
    ]
    result = plan.compute(views)
    assert rows(result.for_backend("gpu-2")) == [
        ("declared_not_served", "gpu-2", QWEN, "restart_waits")
    ]
    assert [type(a) for a in result.for_backend("gpu-1").actions] == [steps.RestartInstance]


def fleet_views() -> list[planview.BackendView]:
    return [
        agent("a", wanted=[(QWEN, LONG), LLAMA], weights=[QWEN, LLAMA], running=[instance(QWEN)],
              free=0),
        agent("b", wanted=[(QWEN, LONG)], weights=[QWEN, LLAMA], running=[instance(QWEN),
              instance(LLAMA)]),
        agent("c", wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN, "starting")]),
    ]  # fmt: skip


def test_the_instance_plan_does_not_depend_on_input_order() -> None:
    views = fleet_views()
    managed = [("b", LLAMA), ("a", QWEN)]
    expected = plan.compute(views, managed=managed)
    assert expected.mutating  # stops, prunes and drift: not a trivially empty plan
    for seed in range(5):
        shuffled = views[:]
        random.Random(seed).shuffle(shuffled)
        assert plan.compute(shuffled, managed=list(reversed(managed))) == expected


def test_a_reused_decision_gives_the_plan_a_fresh_computation_gives() -> None:
    views = fleet_views()
    first = plan.compute(views, managed=[("b", LLAMA)])
    # c's copy became ready with the new arguments: a's and b's restarts are no longer held.
    views[2] = agent(
        "c", wanted=[(QWEN, LONG)], weights=[QWEN], running=[instance(QWEN, vllm=LONG)]
    )
    again = plan.compute(views, managed=[("b", LLAMA)], previous=first)
    fresh = plan.compute(views, managed=[("b", LLAMA)])
    assert again == fresh
    assert again.decisions["a"] is first.decisions["a"]  # reused, then rolled anew
    assert [a.backend for a in again.of(steps.RestartInstance)] == ["a"]
    assert [a.describe() for a in again.for_backend("b").actions] == [
        a.describe() for a in fresh.for_backend("b").actions
    ]


def test_instance_actions_are_mutating_and_described_in_one_line() -> None:
    reason = steps.Reason(C.NO_INSTANCE, "weights present, no instance")
    start = steps.StartInstance("gpu-1", QWEN, QWEN, None, reason)
    stop = steps.StopInstance("gpu-1", QWEN, steps.Reason(C.UNDECLARED, "not declared; prune: all"))
    restart = steps.RestartInstance("gpu-1", QWEN, QWEN, LONG, steps.Reason(C.ENGINE_CHANGED, "x"))
    assert plan.Plan((stop, start, restart)).mutating == (stop, start, restart)
    assert start.describe() == f"start instance {QWEN} on gpu-1: weights present, no instance"
    assert stop.describe() == f"stop instance {QWEN} on gpu-1: not declared; prune: all"
    assert restart.describe() == f"restart instance {QWEN} on gpu-1: x"


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def state_with(vllm: engineargs.VllmArgs | None) -> desired.DesiredState:
    meta = spec.Meta(10, 1, T0, T0)
    return desired.DesiredState(
        backends=(spec.Backend(spec.BackendSpec("gpu-1", NODE, "http://n:8700"), meta),),
        models=(spec.Model(spec.ModelSpec(QWEN, vllm=vllm), meta),),
        pools=(spec.Pool(spec.PoolSpec("p", backends=("gpu-1",), models=(QWEN,)), meta),),
    )


def test_a_node_view_carries_each_models_engine_arguments_and_what_the_adapter_can_do() -> None:
    state = state_with(LONG)
    view = planview.backend_view(
        state, state.backends[0], None, can_pull=True, can_delete=True, runs_instances=True
    )
    assert view.runs_instances
    assert [(m.name, m.vllm) for m in view.desired] == [(QWEN, LONG)]


def test_the_desired_key_changes_when_a_models_engine_arguments_change() -> None:
    # The backend cycle reuses a view while the key is unchanged (runtimestate.reconcile.reuse).
    assert state_with(LONG).key_of("gpu-1") == state_with(LONG).key_of("gpu-1")
    assert state_with(LONG).key_of("gpu-1") != state_with(TP2).key_of("gpu-1")


def test_an_observation_gives_the_planner_instances_and_free_gpus() -> None:
    observation = base.Observation(
        models=(base.ObservedModel(QWEN, QWEN, loaded=True),),
        healthy=True,
        instances=(
            base.ObservedInstance(
                QWEN,
                QWEN,
                base.InstanceState.CRASH_LOOP,
                "http://n:9000/v1",
                "fp",
                (0,),
                3,
                "exited 1",
            ),
        ),
        gpus=base.GpuInventory(total=2, free=1),
    )
    view = reuse.observed_view(observation, stale=False)
    assert view.instances == (
        planview.InstanceView(QWEN, QWEN, "CrashLoopBackOff", "fp", "exited 1"),
    )
    assert (view.gpus_free, view.models) == (1, (planview.ServedModel(QWEN, loaded=True),))

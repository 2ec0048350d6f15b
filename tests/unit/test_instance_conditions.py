"""A node backend's status: a model is ready only when its instance is, and `InstancesReady`
says each desired model's instance state; `reconcile` reports list the instance actions."""

from __future__ import annotations

import datetime as dt
import functools

from controller import reconcile
from runtimestate import snapshot
from runtimestate.backends import base
from runtimestate.desired import spec
from runtimestate.reconcile import (
    conditions,
    cycle,
    execution,
    plan,
    planview,
    probing,
    reuse,
    steps,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
LLAMA = "meta-llama/Llama-3.2-1B"
PHI = "microsoft/phi-2"
S = base.InstanceState


def backend(kind: spec.BackendType = spec.BackendType.NODE) -> spec.Backend:
    return spec.Backend(spec.BackendSpec("gpu-1", kind, "http://n:8700"), spec.Meta(1, 1, T0, T0))


def running(
    name: str, state: base.InstanceState, error: str | None = None
) -> base.ObservedInstance:
    url = "http://n:9000/v1"
    return base.ObservedInstance(name, name, state, url, "fp", (0,), 0, error)


def status(
    desired: tuple[str, ...],
    weights: tuple[str, ...],
    instances: tuple[base.ObservedInstance, ...] = (),
    actions: tuple[steps.Action, ...] = (),
    refused: dict[str, str] | None = None,
    kind: spec.BackendType = spec.BackendType.NODE,
) -> snapshot.LLMState:
    observation = base.Observation(
        models=tuple(base.ObservedModel(w, w) for w in weights),
        healthy=True,
        instances=instances,
        gpus=base.GpuInventory(1, 0),
    )
    record = probing.succeeded(probing.Record[base.Observation](), observation, T0)
    inputs = conditions.Inputs(
        backend(kind), record, observation, actions, (), 1, desired, refused=refused or {}
    )
    return conditions.build(inputs, T0, probing.Policy())


def condition(state: snapshot.LLMState, kind: str) -> tuple[bool, str, str]:
    found = state.condition(kind)
    assert found is not None, [c.type for c in state.conditions]
    return found.status, found.reason, found.message


def test_a_node_counts_a_desired_model_ready_only_when_its_instance_is_ready() -> None:
    starting = status((QWEN,), (QWEN,), (running(QWEN, S.STARTING),))
    assert condition(starting, "ModelsReady") == (
        False, "instances_not_ready", f"instances not ready: {QWEN}"
    )  # fmt: skip
    assert condition(starting, "InstancesReady") == (False, "starting", f"{QWEN}: starting")
    ready = status((QWEN,), (QWEN,), (running(QWEN, S.READY),))
    assert condition(ready, "ModelsReady")[:2] == (True, "ok")
    assert condition(ready, "InstancesReady") == (True, "ok", f"{QWEN}: ready")


def test_instances_ready_gives_each_models_state_and_the_worst_reason() -> None:
    unplaceable = steps.ReportDrift(
        "gpu-1", steps.DriftKind.DECLARED_NOT_SERVED, LLAMA,
        steps.Reason(steps.ReasonCode.UNPLACEABLE, "needs 1 GPU, 0 free"),
    )  # fmt: skip
    state = status(
        (QWEN, LLAMA, PHI),
        (QWEN, LLAMA),
        (running(QWEN, S.CRASH_LOOP, "exited with 1: CUDA out of memory"),),
        (unplaceable,),
    )
    assert condition(state, "InstancesReady") == (
        False,
        "crash_loop",
        f"{QWEN}: CrashLoopBackOff (exited with 1: CUDA out of memory); "
        f"{LLAMA}: unplaceable: needs 1 GPU, 0 free; {PHI}: waiting for weights",
    )
    assert condition(state, "ModelsReady")[:2] == (False, "missing")  # PHI's weights


def test_a_start_the_agent_refused_shows_its_words_in_instances_ready() -> None:
    state = status((QWEN,), (QWEN,), refused={QWEN: "rejected: needs 1 GPU, 0 free"})
    assert condition(state, "InstancesReady") == (
        False, "start_failed", f"{QWEN}: start failed: rejected: needs 1 GPU, 0 free"
    )  # fmt: skip


def test_a_ready_copy_whose_restart_waits_says_what_it_waits_for() -> None:
    waits = steps.ReportDrift(
        "gpu-1", steps.DriftKind.DECLARED_NOT_SERVED, QWEN,
        steps.Reason(steps.ReasonCode.RESTART_WAITS, "restart waits for the copy on gpu-0 to be ready"),
    )  # fmt: skip
    state = status((QWEN,), (QWEN,), (running(QWEN, S.READY),), (waits,))
    assert condition(state, "InstancesReady") == (
        True, "ok", f"{QWEN}: ready; restart waits for the copy on gpu-0 to be ready"
    )  # fmt: skip


def test_backends_that_run_no_instances_have_no_instances_ready_condition() -> None:
    state = status(("qwen2:0.5b",), ("qwen2:0.5b",), kind=spec.BackendType.OLLAMA)
    assert state.condition("InstancesReady") is None
    assert condition(state, "ModelsReady")[:2] == (True, "ok")


def test_reconcile_reports_list_instance_actions_with_their_kind_text_and_outcome() -> None:
    why = steps.Reason(steps.ReasonCode.NO_INSTANCE, "weights present, no instance")
    start = steps.StartInstance("gpu-1", QWEN, QWEN, None, why)
    stop = steps.StopInstance("gpu-1", LLAMA, steps.Reason(steps.ReasonCode.UNDECLARED, "gone"))
    restart = steps.RestartInstance("gpu-1", PHI, PHI, None, why)
    decided = plan.Plan((stop, start, restart))
    report = cycle.Report(
        1, False, 0.1, decided,
        (execution.Outcome(start, False, "rejected: needs 1 GPU, 0 free"),),
        snapshot.Snapshot({}), observed=1, skipped=0,
    )  # fmt: skip
    (only,) = reconcile.report_doc(report, None)["backends"]
    assert [(a["kind"], a["text"], a["done"]) for a in only["actions"]] == [
        ("stop", f"stop instance {LLAMA} on gpu-1: gone", None),
        ("start", f"start instance {QWEN} on gpu-1: weights present, no instance", False),
        ("restart", f"restart instance {PHI} on gpu-1: weights present, no instance", None),
    ]


def test_a_kept_status_is_rebuilt_when_the_agent_refuses_a_start_and_again_when_it_stops() -> None:
    kept = reuse.Reuse()
    observation = base.Observation((base.ObservedModel(QWEN, QWEN),), healthy=True)
    record = probing.succeeded(probing.Record[base.Observation](), observation, T0)
    view = planview.BackendView("gpu-1", spec.BackendType.NODE, runs_instances=True)

    def state(refused: dict[str, str]) -> snapshot.LLMState:
        inputs = conditions.Inputs(
            backend(), record, observation, (), (), 1, (QWEN,), refused=refused
        )
        build = functools.partial(conditions.build, inputs, T0, probing.Policy())
        return kept.state(inputs, snapshot.Phase.READY, view, build)

    refusals = [{}, {}, {QWEN: "rejected: needs 1 GPU, 0 free"}, {}]
    reasons = [condition(state(refused), "InstancesReady")[1] for refused in refusals]
    assert reasons == ["not_started", "not_started", "start_failed", "not_started"]


def test_a_cycles_refused_starts_are_its_failed_starts_and_restarts_by_backend() -> None:
    why = steps.Reason(steps.ReasonCode.NO_INSTANCE, "x")
    start = steps.StartInstance("gpu-1", QWEN, QWEN, None, why)
    restart = steps.RestartInstance("gpu-2", PHI, PHI, None, why)
    stop = steps.StopInstance("gpu-1", LLAMA, why)
    outcomes = (
        execution.Outcome(start, False, "rejected: needs 1 GPU, 0 free"),
        execution.Outcome(restart, False, "skipped", skipped=True),
        execution.Outcome(stop, False, "unavailable: refused"),
        execution.Outcome(steps.StartInstance("gpu-2", LLAMA, LLAMA, None, why), True),
    )
    assert execution.refused(outcomes) == {"gpu-1": {QWEN: "rejected: needs 1 GPU, 0 free"}}

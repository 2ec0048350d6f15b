"""The planner's rules for warm models on Ollama (`runtimestate.reconcile.warmth`): preloads,
unloads of what llmctl preloaded, and why a warm model stays cold."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from dwqueue import jobs
from runtimestate.desired import spec
from runtimestate.reconcile import plan, planview, steps

OLLAMA = spec.BackendType.OLLAMA
C = steps.ReasonCode
GB = 1_000_000_000


def served(name: str, size: int = 1 * GB, loaded: bool = False) -> planview.ServedModel:
    return planview.ServedModel(name, loaded, size, size if loaded else None)


def node(
    *,
    wanted: Iterable[planview.DesiredModel] = (),
    models: Iterable[planview.ServedModel] = (),
    vram: int | None = None,
    preloaded: Iterable[str] = (),
    pending: Iterable[str] = (),
    stale: bool = False,
    can_preload: bool = True,
) -> planview.BackendView:
    return planview.BackendView(
        name="gpu-0",
        type=OLLAMA,
        can_pull=True,
        can_delete=True,
        desired=tuple(wanted),
        observed=planview.ObservedView(tuple(models), stale=stale),
        can_preload=can_preload,
        vram_bytes=vram,
        preloaded=frozenset(preloaded),
        pending=frozenset(pending),
    )


def warm(name: str, keep_alive: str | None = None) -> planview.DesiredModel:
    return planview.DesiredModel(name, f"d-{name}", warm=True, keep_alive=keep_alive)


def cold(name: str) -> planview.DesiredModel:
    return planview.DesiredModel(name, f"d-{name}")


def residency(view: planview.BackendView, **kwargs: object) -> list[tuple[str, str, str]]:
    """(kind, model, reason code) of the plan's preloads, unloads and cold reports."""
    found = plan.compute([view], **kwargs)  # type: ignore[arg-type]
    rows = []
    for action in found.actions:
        if isinstance(action, steps.Preload | steps.Unload):
            rows.append((type(action).__name__, action.model, action.reason.code.value))
        elif isinstance(action, steps.ReportDrift) and action.kind is steps.DriftKind.COLD:
            rows.append(("Cold", action.model, action.reason.code.value))
    return rows


def test_a_warm_model_installed_but_not_loaded_is_preloaded_forever_by_default() -> None:
    view = node(wanted=[warm("qwen2:0.5b")], models=[served("qwen2:0.5b")])
    (preload,) = plan.compute([view]).of(steps.Preload)
    assert (preload.model, preload.keep_alive, preload.reason.code) == ("qwen2:0.5b", "-1", C.WARM)
    assert "preload qwen2:0.5b on gpu-0 (keep_alive -1)" in preload.describe()


def test_a_warm_model_is_preloaded_with_its_declared_keep_alive() -> None:
    view = node(wanted=[warm("qwen2:0.5b", "30m")], models=[served("qwen2:0.5b")])
    assert [p.keep_alive for p in plan.compute([view]).of(steps.Preload)] == ["30m"]


def test_loaded_or_not_warm_models_are_not_preloaded() -> None:
    view = node(
        wanted=[warm("qwen2:0.5b"), cold("llama3.2:1b")],
        models=[served("qwen2:0.5b", loaded=True), served("llama3.2:1b")],
    )
    assert residency(view) == []


def test_nothing_is_preloaded_on_a_stale_observation_or_where_the_backend_cannot_preload() -> None:
    wanted, models = [warm("qwen2:0.5b")], [served("qwen2:0.5b")]
    assert residency(node(wanted=wanted, models=models, stale=True)) == []
    assert residency(node(wanted=wanted, models=models, can_preload=False)) == []


def test_a_warm_model_is_never_preloaded_while_a_download_of_it_is_active() -> None:
    view = node(wanted=[warm("qwen2:0.5b")], models=[served("qwen2:0.5b")])
    job = planview.JobView("j1", "gpu-0", "qwen2:0.5b", "qwen2:0.5b", jobs.JobState.RUNNING, "d")
    assert residency(view, jobs=[job]) == [("Cold", "qwen2:0.5b", "cold_pulling")]


def test_a_warm_model_not_installed_is_pulled_and_reported_cold() -> None:
    found = plan.compute([node(wanted=[warm("qwen2:0.5b")])])
    assert [p.model for p in found.of(steps.Pull)] == ["qwen2:0.5b"]
    assert residency(node(wanted=[warm("qwen2:0.5b")])) == [
        ("Cold", "qwen2:0.5b", "cold_not_installed")
    ]


def test_a_preload_sent_but_not_yet_observed_is_not_sent_again() -> None:
    view = node(wanted=[warm("qwen2:0.5b")], models=[served("qwen2:0.5b")], pending=["qwen2:0.5b"])
    assert residency(view) == [("Cold", "qwen2:0.5b", "cold_pending")]


def test_a_warm_model_past_the_vram_budget_stays_cold_with_the_numbers() -> None:
    view = node(
        wanted=[warm("llama3.2:1b"), warm("qwen2:0.5b")],
        models=[
            served("other:7b", 3 * GB, loaded=True),
            served("llama3.2:1b", int(1.3 * GB)),
            served("qwen2:0.5b", int(0.4 * GB)),
        ],
        vram=4 * GB,
    )
    # llama (1.3 GB) does not fit in the 1 GB left; qwen (0.4 GB) does.
    assert residency(view) == [
        ("Preload", "qwen2:0.5b", "warm"),
        ("Cold", "llama3.2:1b", "cold_budget"),
    ]
    (report,) = [d for d in plan.compute([view]).of(steps.ReportDrift) if d.model == "llama3.2:1b"]
    assert report.reason.text == "left cold: needs 1.3 GB, 1.0 GB of 4.0 GB VRAM free"


def test_preloads_in_one_plan_share_the_budget_in_order_of_name() -> None:
    view = node(
        wanted=[warm("a:1"), warm("b:1")],
        models=[served("a:1", 3 * GB), served("b:1", 3 * GB)],
        vram=5 * GB,
    )
    assert residency(view) == [("Preload", "a:1", "warm"), ("Cold", "b:1", "cold_budget")]


def test_a_model_llmctl_preloaded_is_unloaded_once_it_is_no_longer_warm() -> None:
    view = node(
        wanted=[cold("qwen2:0.5b")],
        models=[served("qwen2:0.5b", loaded=True)],
        preloaded=["qwen2:0.5b"],
    )
    (unload,) = plan.compute([view]).of(steps.Unload)
    assert (unload.model, unload.loaded, unload.reason.code) == ("qwen2:0.5b", True, C.NOT_WARM)
    assert unload.describe() == "unload qwen2:0.5b on gpu-0: preloaded by llmctl, no longer warm"


def test_a_loaded_model_llmctl_did_not_preload_is_never_unloaded() -> None:
    view = node(wanted=[cold("qwen2:0.5b")], models=[served("qwen2:0.5b", loaded=True)])
    assert residency(view) == []


def test_a_warm_model_llmctl_preloaded_stays_loaded() -> None:
    view = node(
        wanted=[warm("qwen2:0.5b")],
        models=[served("qwen2:0.5b", loaded=True)],
        preloaded=["qwen2:0.5b"],
    )
    assert residency(view) == []


def test_the_record_of_a_preload_no_longer_warm_and_not_loaded_is_dropped_without_a_request() -> (
    None
):
    view = node(wanted=[], models=[served("qwen2:0.5b")], preloaded=["qwen2:0.5b"])
    (unload,) = plan.compute([view]).of(steps.Unload)
    assert not unload.loaded
    assert unload.describe().startswith("forget the preload of qwen2:0.5b on gpu-0")


def test_a_warm_model_unloaded_by_something_else_is_preloaded_again() -> None:
    view = node(
        wanted=[warm("qwen2:0.5b")], models=[served("qwen2:0.5b")], preloaded=["qwen2:0.5b"]
    )
    assert residency(view) == [("Preload", "qwen2:0.5b", "warm")]


def test_a_reused_decision_sees_a_changed_pending_set() -> None:
    view = node(wanted=[warm("qwen2:0.5b")], models=[served("qwen2:0.5b")])
    first = plan.compute([view])
    pending = dataclasses.replace(view, pending=frozenset({"qwen2:0.5b"}))
    assert plan.compute([pending], previous=first).of(steps.Preload) == ()

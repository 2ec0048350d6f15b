"""Admission: pulls are queued only where the model's known size fits (issue 16)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from runtimestate.desired import spec
from runtimestate.reconcile import admission, plan, planview, steps

GB = 1_000_000_000
OLLAMA = spec.BackendType.OLLAMA
CAPACITY = steps.ReasonCode.INSUFFICIENT_CAPACITY


def node(
    desired: Iterable[str],
    served: Iterable[str] = (),
    *,
    total: int | None = 20 * GB,
    free: int = 0,
    sizes: dict[str, int] | None = None,
    prune: spec.PrunePolicy = spec.PrunePolicy.ALL,
) -> planview.BackendView:
    capacity = None
    if total is not None:
        capacity = planview.Capacity(total, free, tuple(sorted((sizes or {}).items())))
    return planview.BackendView(
        name="gpu-1",
        type=OLLAMA,
        prune=prune,
        can_pull=True,
        can_delete=True,
        desired=tuple(planview.DesiredModel(m, "d1") for m in desired),
        observed=planview.ObservedView(tuple(planview.ServedModel(m) for m in served)),
        capacity=capacity,
    )


def rows(view: planview.BackendView) -> list[tuple[str, str, str]]:
    return [
        (type(a).__name__, a.model, a.reason.code.value)
        for a in plan.compute([view]).actions
        if not isinstance(a, steps.CancelJob)
    ]


def test_a_pull_that_does_not_fit_is_held_as_drift_with_the_numbers() -> None:
    view = node(["big:latest"], free=int(1.2 * GB), sizes={"big:latest": int(4.7 * GB)})
    (drift,) = plan.compute([view]).actions
    assert isinstance(drift, steps.ReportDrift)
    assert drift.kind is steps.DriftKind.DECLARED_NOT_SERVED
    assert drift.reason.code is CAPACITY
    assert drift.reason.text.startswith("needs 4.7 GB, 1.2 GB free of 20 GB")
    assert "needs 4.7 GB, 1.2 GB free of 20 GB" in drift.describe()


def test_a_pull_that_fits_is_queued_and_says_what_it_takes() -> None:
    view = node(["small:latest"], free=5 * GB, sizes={"small:latest": 2 * GB})
    (pull,) = plan.compute([view]).actions
    assert isinstance(pull, steps.Pull)
    assert pull.reason.code is steps.ReasonCode.MISSING
    assert pull.reason.text.endswith("fits: 2 GB of 5 GB free of 20 GB")


def test_several_pulls_on_one_backend_are_admitted_in_model_name_order_against_one_free() -> None:
    sizes = {"a:latest": 3 * GB, "b:latest": 3 * GB, "c:latest": 1 * GB}
    view = node(["c:latest", "b:latest", "a:latest"], free=5 * GB, sizes=sizes)
    assert rows(view) == [
        ("Pull", "a:latest", "missing"),
        ("Pull", "c:latest", "missing"),
        ("ReportDrift", "b:latest", "insufficient_capacity"),
    ]
    held = plan.compute([view]).of(steps.ReportDrift)[0]
    assert held.reason.text.startswith("needs 3 GB, 2 GB free of 20 GB")


def test_a_pull_of_unknown_size_is_queued_as_before() -> None:
    view = node(["a:latest", "b:latest"], free=0, sizes={"a:latest": GB})
    assert rows(view) == [
        ("Pull", "b:latest", "missing"),
        ("ReportDrift", "a:latest", "insufficient_capacity"),
    ]


def test_a_backend_without_a_capacity_pulls_as_before() -> None:
    view = node(["a:latest"], total=None)
    (pull,) = plan.compute([view]).actions
    assert pull == steps.Pull(
        "gpu-1",
        "a:latest",
        "a:latest",
        "d1",
        steps.Reason(steps.ReasonCode.MISSING, "declared but not present"),
    )


def test_a_prune_in_the_same_plan_does_not_free_room_for_a_pull_of_that_plan() -> None:
    view = node(["new:latest"], ["old:latest"], free=GB, sizes={"new:latest": 4 * GB})
    assert rows(view) == [
        ("Prune", "old:latest", "undeclared"),
        ("ReportDrift", "new:latest", "insufficient_capacity"),
    ]


def test_a_held_pull_is_queued_once_room_appears() -> None:
    before = node(["new:latest"], free=GB, sizes={"new:latest": 4 * GB})
    after = node(["new:latest"], free=5 * GB, sizes={"new:latest": 4 * GB})
    first = plan.compute([before])
    assert rows(before) == [("ReportDrift", "new:latest", "insufficient_capacity")]
    assert [type(a) for a in plan.compute([after], previous=first).actions] == [steps.Pull]


def test_a_larger_declaration_admits_a_held_pull() -> None:
    small = node(["new:latest"], total=3 * GB, free=3 * GB, sizes={"new:latest": 4 * GB})
    large = node(["new:latest"], total=30 * GB, free=30 * GB, sizes={"new:latest": 4 * GB})
    assert rows(small) == [("ReportDrift", "new:latest", "insufficient_capacity")]
    assert rows(large) == [("Pull", "new:latest", "missing")]


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (512, "512 B"),
        (1_000, "1 KB"),
        (1_500, "1.5 KB"),
        (274_000_000, "274 MB"),
        (4_700_000_000, "4.7 GB"),
        (20_000_000_000, "20 GB"),
        (12_345_678_901, "12 GB"),
        (2_000_000_000_000, "2 TB"),
    ],
)
def test_sizes_read_in_decimal_units_as_ollama_prints_them(count: int, text: str) -> None:
    assert admission.human(count) == text

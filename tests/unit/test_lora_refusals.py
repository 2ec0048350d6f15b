"""Refused LoRA loads are held back a while, not retried every cycle (issue 16)."""

from __future__ import annotations

import datetime as dt

from runtimestate.desired import spec
from runtimestate.reconcile import execution, planview, refusals, steps

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
REFUSED = "rejected: runtime LoRA updating is off (VLLM_ALLOW_RUNTIME_LORA_UPDATING)"


def _view(source: str = "/adapters/sql") -> dict[str, planview.BackendView]:
    placed = (planview.DesiredAdapter("sql", "base-7b", source),)
    return {"gpu-0": planview.BackendView("gpu-0", spec.BackendType.VLLM, adapters=placed)}


def _refused(version: str | None = "0.33.0") -> refusals.Refusals:
    held = refusals.Refusals()
    reason = steps.Reason(steps.ReasonCode.ADAPTER_MISSING, "declared, not loaded")
    load = steps.LoadAdapter("gpu-0", "sql", "base-7b", "/adapters/sql", reason)
    held.note([execution.Outcome(load, False, REFUSED, terminal=True)], lambda _: version, T0)
    return held


def _refusal(
    held: refusals.Refusals,
    *,
    views: dict[str, planview.BackendView] | None = None,
    version: str | None = "0.33.0",
    after: dt.timedelta = dt.timedelta(minutes=1),
) -> tuple[tuple[str, str], ...]:
    found = held.records(views or _view(), [], lambda _: version, T0 + after)
    return found["gpu-0"].refused if "gpu-0" in found else ()


def test_a_refused_load_is_held_with_the_servers_words() -> None:
    assert _refusal(_refused()) == (("sql", REFUSED),)


def test_the_hold_ends_after_ten_minutes() -> None:
    assert _refusal(_refused(), after=refusals.HOLD) == ()


def test_the_hold_ends_when_the_server_reports_another_version() -> None:
    assert _refusal(_refused(), version="0.34.0") == ()


def test_the_hold_ends_when_the_adapters_source_changes() -> None:
    assert _refusal(_refused(), views=_view("/adapters/sql-v2")) == ()


def test_a_failure_that_may_pass_is_not_held() -> None:
    held = refusals.Refusals()
    reason = steps.Reason(steps.ReasonCode.ADAPTER_MISSING, "declared, not loaded")
    load = steps.LoadAdapter("gpu-0", "sql", "base-7b", "/adapters/sql", reason)
    held.note([execution.Outcome(load, False, "timeout: no answer")], lambda _: "0.33.0", T0)
    assert _refusal(held) == ()


def test_the_adapters_llmctl_loaded_are_handed_to_the_planner() -> None:
    found = refusals.Refusals().records(_view(), [("gpu-0", "sql")], lambda _: None, T0)
    assert found == {"gpu-0": planview.LoraRecord(frozenset({"sql"}))}

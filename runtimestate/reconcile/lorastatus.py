"""The ``AdaptersReady`` condition of a backend with LoRA adapters placed on it (issue 16).

Called by `runtimestate.reconcile.conditions.build` for a backend whose pools place adapters.
True (``ok``) when the plan neither loads one nor reports one not loaded; otherwise false with
the first reason in plan order (``adapter_missing`` while a load is planned, ``base_not_served``,
``load_refused``, ``observation_stale``, ``cannot_load_adapters``) and a message naming each
adapter that is not loaded and why. Pure: reads the plan's actions only.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtimestate import snapshot
from runtimestate.reconcile import steps


def ready(placed: Sequence[str], actions: Sequence[steps.Action]) -> snapshot.Condition:
    """The condition, from the adapters placed on the backend and its share of the plan."""
    wanted = set(placed)
    missing: list[tuple[str, steps.Reason]] = []
    for action in actions:
        if action.model not in wanted:
            continue
        if isinstance(action, steps.LoadAdapter):
            missing.append((action.adapter, steps.Reason(action.reason.code, "loading")))
        elif isinstance(action, steps.ReportDrift) and (
            action.kind is steps.DriftKind.ADAPTER_NOT_LOADED
        ):
            missing.append((action.model, action.reason))
    if not missing:
        return snapshot.Condition(
            "AdaptersReady", True, "ok", f"loaded: {', '.join(sorted(wanted))}"
        )
    message = "; ".join(f"{name}: {reason.text}" for name, reason in sorted(missing))
    return snapshot.Condition("AdaptersReady", False, missing[0][1].code.value, message)

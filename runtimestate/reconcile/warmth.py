"""Warm models: which declared-warm models to preload on a backend, which to unload, and why
the others stay cold (issue 16, DESIGN.md section 13).

Called by `runtimestate.reconcile.plan` once per backend decision (`decide`); its actions are
applied by `runtimestate.reconcile.execution` through the Ollama adapter's `preload`/`unload`.
Pure and deterministic: no I/O, no clock; it must not import `runtimestate.backends`.

Rules, on a backend that can preload and was observed fresh this cycle:
- A desired model declared `warm` that is installed but not loaded is preloaded with its
  keep-alive (none declared: ``-1``, forever), unless a download of it is active, a preload
  of it was sent and no observation shows its result yet (`BackendView.pending`: exactly one
  request per warm-up), or it does not fit the backend's VRAM budget. The budget check adds
  the `size_vram` of every loaded model and the model's estimate: its size on disk as
  `/api/tags` lists it (the size of its weights, which is what a fully offloaded model holds).
  Models preloaded in the same plan count in order of name. Each of these cases is reported
  as `COLD` drift with the reason and, past the budget, the numbers.
- A model llmctl preloaded (`BackendView.preloaded`) that is no longer warm here is unloaded
  if loaded; if it is not, only the record of the preload is dropped.
A warm model that is not installed is `COLD` too ("not installed yet"); pulling it is the
planner's model rules' business.
"""

from __future__ import annotations

from collections.abc import Mapping

from runtimestate.desired import names
from runtimestate.reconcile import planview, steps

FOREVER = "-1"  # Ollama's keep_alive for "never unload"


def decide(
    view: planview.BackendView,
    desired: Mapping[names.ModelKey, planview.DesiredModel],
    active: frozenset[names.ModelKey],
) -> list[steps.Action]:
    """Preloads, unloads and cold reports of one backend (``desired`` and ``active``: the
    desired models and the models being downloaded, by comparison key)."""
    observed = view.observed
    if not view.can_preload or observed is None or observed.stale:
        return []
    served = {names.key(m.name, view.type): m for m in observed.models}
    result: list[steps.Action] = _unloads(view, desired, served)
    used = sum(m.size_vram or 0 for m in observed.models if m.loaded)
    for model_key in sorted(desired):
        wanted = desired[model_key]
        found = served.get(model_key)
        if not wanted.warm or (found is not None and found.loaded):
            continue
        cold = _cold_reason(view, model_key, found, active, used)
        if cold is not None:
            result.append(steps.ReportDrift(view.name, steps.DriftKind.COLD, wanted.name, cold))
            continue
        assert found is not None  # _cold_reason reports a model that is not installed
        used += found.size or 0
        reason = steps.Reason(steps.ReasonCode.WARM, "declared warm; installed, not loaded")
        result.append(steps.Preload(view.name, found.name, wanted.keep_alive or FOREVER, reason))
    return result


def _unloads(
    view: planview.BackendView,
    desired: Mapping[names.ModelKey, planview.DesiredModel],
    served: Mapping[names.ModelKey, planview.ServedModel],
) -> list[steps.Action]:
    result: list[steps.Action] = []
    for model_key in sorted(view.preloaded):
        key = names.key(model_key, view.type)
        wanted = desired.get(key)
        if wanted is not None and wanted.warm:
            continue
        found = served.get(key)
        loaded = found is not None and found.loaded
        text = "preloaded by llmctl, no longer warm" + ("" if loaded else "; not loaded")
        reason = steps.Reason(steps.ReasonCode.NOT_WARM, text)
        result.append(steps.Unload(view.name, found.name if found else model_key, loaded, reason))
    return result


def _cold_reason(
    view: planview.BackendView,
    model_key: names.ModelKey,
    found: planview.ServedModel | None,
    active: frozenset[names.ModelKey],
    used: int,
) -> steps.Reason | None:
    """Why a warm model that is not loaded is not preloaded now, or None to preload it."""
    if model_key in active:
        return steps.Reason(steps.ReasonCode.COLD_PULLING, "left cold: a download of it is active")
    if found is None:
        return steps.Reason(steps.ReasonCode.COLD_NOT_INSTALLED, "left cold: not installed yet")
    if model_key in view.pending:
        text = "left cold: a preload was sent; waiting for the node to show it loaded"
        return steps.Reason(steps.ReasonCode.COLD_PENDING, text)
    budget = view.vram_bytes
    need = found.size or 0
    if budget is not None and used + need > budget:
        free = max(budget - used, 0)
        text = f"left cold: needs {gigabytes(need)}, {gigabytes(free)} of {gigabytes(budget)}"
        text += " VRAM free"
        return steps.Reason(steps.ReasonCode.COLD_BUDGET, text)
    return None


def gigabytes(size: int) -> str:
    """Bytes as decimal gigabytes with one decimal, as Ollama's CLI shows sizes: ``4.7 GB``."""
    return f"{size / 1e9:.1f} GB"

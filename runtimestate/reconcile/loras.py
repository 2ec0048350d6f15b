"""The planner's rules for LoRA adapters on vLLM servers and node agents (issue 16).

Called by `runtimestate.reconcile.plan` once per backend decision (`decide`): load, unload, or
report. A vLLM server lists each loaded adapter in `/v1/models` as a card whose `parent` is its
base model, and a node agent each adapter its instances serve; the planner sees them as
`planview.ServedModel`s with a `parent`. Rules:

- An adapter placed on a backend that cannot load adapters (Ollama, the clouds) is drift,
  `cannot_load_adapters`.
- On a node agent the base model is served when its instance is ready and runs the declared
  engine arguments (one restarting for new ones is not yet); a base model declared without
  ``vllm.enableLora`` is drift, `lora_not_enabled`, naming the setting.
- Nothing is loaded or unloaded on a missing or stale observation (drift, `observation_stale`).
- A placed adapter that is not loaded is loaded when its base model is served there (by the
  backend's comparison key), else drift "base model X not served here"; a load the server
  refused is held (`planview.LoraRecord.refused`: the backend cycle decides for how long) and
  reported as drift, `load_refused`.
- A loaded adapter placed nowhere on the backend, with the desired state read completely, is
  unloaded per the backend's prune policy: `all` any, `managed` only those llmctl loaded,
  `none` none; a backend in no pool is observed only. What is kept is drift with the reason.

Pure and deterministic, like the planner: no I/O, no clock, no adapter imports.
"""

from __future__ import annotations

from runtimestate.desired import names, spec
from runtimestate.reconcile import planview, steps

_NOT_LOADED = steps.DriftKind.ADAPTER_NOT_LOADED
_NOT_DECLARED = steps.DriftKind.ADAPTER_NOT_DECLARED


def decide(
    view: planview.BackendView, record: planview.LoraRecord, desired_complete: bool
) -> list[steps.Action]:
    """The adapter actions of one backend (unsorted; the planner sorts its decision)."""
    if not view.can_load_lora:
        text = f"llmctl loads adapters only on vllm and node backends, not on {view.type}"
        return [
            _drift(view, a.name, steps.ReasonCode.CANNOT_LOAD_ADAPTERS, text) for a in view.adapters
        ]
    observed = view.observed
    if observed is None:
        return []  # nothing is known about the backend; its status says why
    loaded = {m.name for m in observed.models if m.parent is not None}
    if observed.stale:
        text = "declared, not loaded; loading waits for a fresh observation"
        code = steps.ReasonCode.OBSERVATION_STALE
        return [_drift(view, a.name, code, text) for a in view.adapters if a.name not in loaded]
    result = _declared(view, record, loaded)
    if desired_complete:  # read incompletely, "placed nowhere" cannot be known
        result += _undeclared(view, record, loaded)
    return result


def _declared(
    view: planview.BackendView, record: planview.LoraRecord, loaded: set[str]
) -> list[steps.Action]:
    bases = _bases(view)
    refused = dict(record.refused)
    result: list[steps.Action] = []
    for adapter in view.adapters:
        if adapter.name in loaded:
            continue
        if view.runs_instances and not _enables_lora(view, adapter.base_model):
            text = f"declared, not loaded: model {adapter.base_model} is not started with "
            text += "vllm.enableLora"
            result.append(_drift(view, adapter.name, steps.ReasonCode.LORA_NOT_ENABLED, text))
        elif names.key(adapter.base_model, view.type) not in bases:
            text = f"declared, not loaded: base model {adapter.base_model} not served here"
            result.append(_drift(view, adapter.name, steps.ReasonCode.BASE_NOT_SERVED, text))
        elif adapter.name in refused:
            text = f"declared, not loaded: the server refused it ({refused[adapter.name]})"
            result.append(_drift(view, adapter.name, steps.ReasonCode.LOAD_REFUSED, text))
        else:
            reason = steps.Reason(steps.ReasonCode.ADAPTER_MISSING, "declared, not loaded")
            result.append(
                steps.LoadAdapter(
                    view.name,
                    adapter.name,
                    adapter.base_model,
                    adapter.source,
                    reason,
                    adapter.revision,
                )
            )
    return result


def _bases(view: planview.BackendView) -> set[names.ModelKey]:
    """The models adapters can be loaded onto now: a vLLM server's base models, a node agent's
    ready instances that run the declared engine arguments (or report none)."""
    observed = view.observed
    assert observed is not None
    kind = view.type
    if not view.runs_instances:
        return {names.key(m.name, kind) for m in observed.models if m.parent is None}
    declared = {names.key(m.name, kind): m.engine for m in view.desired}
    return {
        names.key(i.name, kind)
        for i in observed.instances
        if i.state == planview.READY
        and (not i.engine or i.engine == declared.get(names.key(i.name, kind), i.engine))
    }


def _enables_lora(view: planview.BackendView, base_model: str) -> bool:
    """Whether the base model, where declared on this node, is started with LoRA."""
    key = names.key(base_model, view.type)
    for model in view.desired:
        if names.key(model.name, view.type) == key:
            return model.vllm is not None and model.vllm.enable_lora
    return True  # not declared here: its instance is not served, and the drift says so


def _undeclared(
    view: planview.BackendView, record: planview.LoraRecord, loaded: set[str]
) -> list[steps.Action]:
    placed = {a.name for a in view.adapters}
    result: list[steps.Action] = []
    for adapter in sorted(loaded - placed):
        kept = _kept(view, record, adapter)
        if kept is None:
            text = "loaded, placed nowhere here; prune: " + view.prune.value
            reason = steps.Reason(steps.ReasonCode.ADAPTER_UNDECLARED, text)
            result.append(steps.UnloadAdapter(view.name, adapter, reason))
        else:
            result.append(steps.ReportDrift(view.name, _NOT_DECLARED, adapter, kept))
    return result


def _kept(
    view: planview.BackendView, record: planview.LoraRecord, adapter: str
) -> steps.Reason | None:
    """Why an adapter nobody placed stays loaded, or None to unload it."""
    if not view.in_pool:
        return steps.Reason(
            steps.ReasonCode.NOT_IN_POOL, "the backend is in no pool; observed only"
        )
    if view.prune is spec.PrunePolicy.NONE:
        return steps.Reason(steps.ReasonCode.PRUNE_NONE, "prune: none")
    if view.prune is spec.PrunePolicy.MANAGED and adapter not in record.managed:
        return steps.Reason(
            steps.ReasonCode.NOT_MANAGED, "not loaded by llmctl; prune: managed keeps it"
        )
    return None


def _drift(
    view: planview.BackendView, adapter: str, code: steps.ReasonCode, text: str
) -> steps.ReportDrift:
    return steps.ReportDrift(view.name, _NOT_LOADED, adapter, steps.Reason(code, text))

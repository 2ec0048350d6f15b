"""Building one backend's `snapshot.LLMState` from what a cycle saw and decided.

Called by the backend cycle for every declared backend whose inputs changed since the last cycle
(`runtimestate.reconcile.reuse` reuses the others' states). Pure: the observation, the probe record,
the plan and the jobs come in; an immutable state with Kubernetes-style conditions comes out.
Conditions:

- ``Reachable``: the last probe answered (reason ``ok``) or the error's reason code.
- ``ModelsReady``: every desired model is served (``ok``), or why not (``pulling``,
  ``held``, ``missing``, ``unobserved``, ``instances_not_ready``). On a node agent a model is
  served only when its instance is ready.
- ``InstancesReady`` (node agents only): every desired model's instance is ready (``ok``), or
  the worst reason (``crash_loop``, ``start_failed``, ``unplaceable``, ``starting``,
  ``not_started``); the message gives each desired model's instance state: ready, starting,
  CrashLoopBackOff with its last error and its log's last line, unplaceable with the GPU
  numbers, the agent's refusal of a start, waiting for weights, and a restart that waits for
  another copy.
- ``WarmModels`` (backends with desired warm models, issue 16): every warm model is loaded
  (``ok``), or the first reason one is not (``preloading``, or the planner's cold reason:
  ``cold_pulling``, ``cold_not_installed``, ``cold_pending``, ``cold_budget``); the message
  says of each warm model whether it is warm, being preloaded, or why it was left cold.
- ``AdaptersReady`` (backends with adapters placed; `runtimestate.reconcile.lorastatus`), and
  ``AdaptersNotDeclared``: LoRA adapters loaded, placed nowhere here, kept by the prune policy.
- ``DeclaredNotServed`` / ``ServedNotDeclared``: drift the planner reported and llmctl does not
  act on (a vLLM node's fixed model set, a cloud provider's listing, models the prune policy
  keeps); the message names the models.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from dwqueue import jobs
from runtimestate import snapshot
from runtimestate.backends import base
from runtimestate.desired import names, spec
from runtimestate.reconcile import diskspace, lorastatus, probing, serving, steps


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What `build` reads. `desired` (the declared names) is the costly, per-model part: the backend
    cycle fills it in only when a state must really be built (`runtimestate.reconcile.reuse`), so it
    comes last. `overrides` is one mapping per backend type and read
    (`desired.DesiredState.overrides`)."""

    backend: spec.Backend
    record: probing.Record[base.Observation]
    usable: base.Observation | None
    actions: Sequence[steps.Action]
    jobs: Sequence[jobs.Job]
    observed_generation: int
    desired: tuple[str, ...] = ()
    # Every declared model with overrides, by comparison key: their context length and
    # capabilities win over what the backend reports, desired here or not (DESIGN section 4).
    overrides: Mapping[names.ModelKey, spec.ModelSpec] = dataclasses.field(default_factory=dict)
    # A node agent's refusals this cycle: model -> why its start or restart failed.
    refused: Mapping[str, str] = dataclasses.field(default_factory=dict)
    warm: tuple[str, ...] = ()  # the desired models declared warm (filled in like `desired`)
    adapters: tuple[str, ...] = ()  # the LoRA adapters placed here (issue 16), filled as `desired`


def pulled(
    model: base.ObservedModel,
    declared: spec.ModelSpec | None = None,
    base_url: str | None = None,
) -> snapshot.PulledModel:
    """A reported model as the snapshot shows it, with the declared overrides applied;
    `base_url` where it is served when not at the backend's URL (`serving.urls`)."""
    details = model.details
    context = model.context_length
    caps = {"chat": model.can_chat, "embed": model.can_embed, "prompt": model.can_prompt,
            "stream": model.can_stream}  # fmt: skip
    if declared is not None and declared.context_length is not None:
        context = declared.context_length
    if declared is not None and declared.capabilities is not None:
        caps = {name: spec.Capability(name) in declared.capabilities for name in caps}
    return snapshot.PulledModel(
        name=model.name,
        model=model.model,
        digest=model.digest or "",
        size=model.size or 0,
        modified_at=model.modified_at,
        family=details.family or "",
        parameter_size=details.parameter_size or "",
        quantization_level=details.quantization_level or "",
        format=details.format or "",
        context_length=context,
        can_chat=caps["chat"],
        can_embed=caps["embed"],
        can_prompt=caps["prompt"],
        can_stream=caps["stream"],
        loaded=model.loaded,
        base_url=base_url,
        size_vram=model.size_vram or 0,
        expires_at=model.expires_at,
        parent=details.parent_model,
    )


def _download(job: jobs.Job) -> snapshot.DownloadView:
    return snapshot.DownloadView(
        job.id, job.model, job.state.value, job.progress.percent, job.error
    )


def _names(models: Iterable[str]) -> str:
    return ", ".join(sorted(models))


def _reachable(record: probing.Record[base.Observation]) -> snapshot.Condition:
    if record.failures == 0 and record.last_ok_at is not None:
        return snapshot.Condition("Reachable", True, "ok")
    if record.failures == 0:
        return snapshot.Condition("Reachable", False, "unknown", "not probed yet")
    return snapshot.Condition(
        "Reachable", False, record.last_reason or "error", record.last_error or ""
    )


def _models_ready(
    inputs: Inputs,
    served: set[names.ModelKey],
    holds: Sequence[steps.Hold],
    pending: Sequence[jobs.Job],
) -> snapshot.Condition:
    kind = inputs.backend.spec.type
    missing = [m for m in inputs.desired if names.key(m, kind) not in served]
    usable = inputs.usable
    if usable is None:
        return snapshot.Condition("ModelsReady", False, "unobserved", "no usable observation")
    if not missing:
        return snapshot.Condition("ModelsReady", True, "ok")
    if holds:
        held = _names(h.model for h in holds)
        return snapshot.Condition("ModelsReady", False, "held", f"downloads held: {held}")
    if pending:
        return snapshot.Condition(
            "ModelsReady", False, "pulling", f"pulling: {_names(j.model for j in pending)}"
        )
    if kind is spec.BackendType.NODE:
        weights = {names.key(m.name, kind) for m in usable.models}
        if all(names.key(m, kind) in weights for m in missing):
            text = f"instances not ready: {_names(missing)}"
            return snapshot.Condition("ModelsReady", False, "instances_not_ready", text)
    return snapshot.Condition("ModelsReady", False, "missing", f"missing: {_names(missing)}")


_LAST_ERROR = 200  # characters of an instance's last error shown in its condition
# The reasons of InstancesReady, worst first.
_WORST = ("crash_loop", "start_failed", "unplaceable", "starting", "not_started")


def _instances_ready(inputs: Inputs, observation: base.Observation) -> snapshot.Condition:
    """Each desired model's instance state on a node agent, and the worst of them."""
    kind = inputs.backend.spec.type
    running = {names.key(i.name, kind): i for i in observation.instances}
    weights = {names.key(m.name, kind) for m in observation.models}
    drift = {
        names.key(a.model, kind): a.reason
        for a in inputs.actions
        if isinstance(a, steps.ReportDrift)
        and a.reason.code in (steps.ReasonCode.UNPLACEABLE, steps.ReasonCode.RESTART_WAITS)
    }
    found: list[tuple[str, str]] = []  # (reason, "model: state")
    for model in sorted(inputs.desired):
        key = names.key(model, kind)
        reason, text = _instance_state(running.get(key), inputs.refused.get(model))
        if reason == "not_started" and key not in weights:
            text = "waiting for weights"
        held = drift.get(key)
        if held is not None:
            unplaceable = held.code is steps.ReasonCode.UNPLACEABLE and reason == "not_started"
            reason = "unplaceable" if unplaceable else reason
            text = f"unplaceable: {held.text}" if unplaceable else f"{text}; {held.text}"
        found.append((reason, f"{model}: {text}"))
    message = "; ".join(line for _, line in found)
    reasons = {reason for reason, _ in found}
    worst = next((r for r in _WORST if r in reasons), None)
    if worst is None:
        return snapshot.Condition("InstancesReady", True, "ok", message)
    return snapshot.Condition("InstancesReady", False, worst, message)


def _instance_state(found: base.ObservedInstance | None, refused: str | None) -> tuple[str, str]:
    if found is None:
        return ("start_failed", f"start failed: {refused}") if refused else ("not_started", "")
    match found.state:
        case base.InstanceState.READY:
            return "ok", "ready"
        case base.InstanceState.CRASH_LOOP:
            error = (found.last_error or "no error reported")[:_LAST_ERROR]
            said = f"; its log ends: {found.log_tail[-1][:_LAST_ERROR]}" if found.log_tail else ""
            return "crash_loop", f"CrashLoopBackOff ({error}{said})"
        case _:
            return "starting", found.state.value


def _drift(actions: Sequence[steps.Action]) -> list[snapshot.Condition]:
    drift = [a for a in actions if isinstance(a, steps.ReportDrift)]
    conditions = []
    for kind, type_ in (
        (steps.DriftKind.DECLARED_NOT_SERVED, "DeclaredNotServed"),
        (steps.DriftKind.SERVED_NOT_DECLARED, "ServedNotDeclared"),
        (steps.DriftKind.ADAPTER_NOT_DECLARED, "AdaptersNotDeclared"),  # LoRA, kept loaded
    ):
        found = [a for a in drift if a.kind is kind]
        if found:
            message = "; ".join(_drift_line(a) for a in sorted(found, key=lambda a: a.model))
            conditions.append(snapshot.Condition(type_, True, found[0].reason.code.value, message))
    return conditions


def _drift_line(action: steps.ReportDrift) -> str:
    """``model (reason)``; a pull held for room also gives its numbers (``needs 4.7 GB, ...``)."""
    code = action.reason.code
    if code is steps.ReasonCode.INSUFFICIENT_CAPACITY:
        return f"{action.model} ({code.value}: {action.reason.text})"
    return f"{action.model} ({code.value})"


def _warm_models(inputs: Inputs, models: Sequence[base.ObservedModel]) -> snapshot.Condition:
    """Each warm model: loaded, being preloaded by this plan, or why it was left cold."""
    kind = inputs.backend.spec.type
    loaded = {names.key(m.name, kind) for m in models if m.loaded}
    preloading = {names.key(a.model, kind) for a in inputs.actions if isinstance(a, steps.Preload)}
    cold = {
        names.key(a.model, kind): a.reason
        for a in inputs.actions
        if isinstance(a, steps.ReportDrift) and a.kind is steps.DriftKind.COLD
    }
    reasons: list[str] = []
    lines: list[str] = []
    for model in sorted(inputs.warm):
        key = names.key(model, kind)
        if key in loaded:
            lines.append(f"{model}: warm")
        elif key in preloading:
            reasons.append("preloading")
            lines.append(f"{model}: preloading")
        else:
            found = cold.get(key)
            reasons.append(found.code.value if found else "cold")
            lines.append(f"{model}: {found.text if found else 'cold'}")
    message = "; ".join(lines)
    if not reasons:
        return snapshot.Condition("WarmModels", True, "ok", message)
    return snapshot.Condition("WarmModels", False, reasons[0], message)


def _runs(backend: spec.Backend) -> bool:
    return backend.spec.type is spec.BackendType.NODE


def build(inputs: Inputs, now: dt.datetime, policy: probing.Policy) -> snapshot.LLMState:
    """The backend's state after this cycle."""
    backend, record = inputs.backend, inputs.record
    observation = inputs.usable
    models = observation.models if observation else ()
    instances = observation.instances if observation else ()
    at = serving.urls(instances)
    served = {names.key(m.name, backend.spec.type) for m in models}
    holds = [a for a in inputs.actions if isinstance(a, steps.Hold)]
    pending = [j for j in inputs.jobs if j.state in (jobs.JobState.QUEUED, jobs.JobState.RUNNING)]
    failed = [j for j in inputs.jobs if j.state is jobs.JobState.FAILED]
    held_ids = {h.job_id for h in holds}
    metrics = observation.metrics if observation else None
    load = (
        snapshot.Load(metrics.running, metrics.waiting, metrics.kv_cache_usage)
        if metrics
        else snapshot.Load()
    )
    if _runs(backend):  # served: a ready instance
        instances = observation.instances if observation else ()
        ready = [i for i in instances if i.state is base.InstanceState.READY]
        served = {names.key(i.name, backend.spec.type) for i in ready}
    conditions = (
        _reachable(record),
        _models_ready(inputs, served, holds, pending),
        *([_instances_ready(inputs, observation)] if observation and _runs(backend) else []),
        *([_warm_models(inputs, models)] if inputs.warm and observation else []),
        *_drift(inputs.actions),
        *([lorastatus.ready(inputs.adapters, inputs.actions)] if inputs.adapters else []),
    )
    return snapshot.LLMState(
        id=backend.meta.id,
        name=backend.name,
        type=backend.spec.type.value,
        base_url=backend.spec.url,
        models=inputs.desired,
        pulled_models=tuple(
            pulled(m, inputs.overrides.get(names.key(m.name, backend.spec.type)), at.get(m.name))
            for m in models
        ),
        phase=record.phase(now, policy),
        error=record.last_error if record.failures else None,
        conditions=conditions,
        observed_generation=inputs.observed_generation,
        last_ok_at=record.last_ok_at,
        version=observation.version if observation else None,
        load=load,
        downloads_pending=tuple(_download(j) for j in pending),
        downloads_failed=tuple(_download(j) for j in failed if j.id not in held_ids),
        downloads_held=tuple(_download(j) for j in inputs.jobs if j.id in held_ids),
        instances=serving.views(instances),
        adapters=inputs.adapters,
        disk=diskspace.view(backend, observation, inputs.jobs),  # admission (issue 16)
    )

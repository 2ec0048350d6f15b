"""The rules for a node agent's instances: when the planner starts, restarts or stops them.

A node backend (`planview.BackendView.runs_instances`) serves a model through one ``vllm serve``
instance per model, run by the agent from the model's weights in its cache. Its weights are
pulled and pruned by the planner's model rules (`runtimestate.reconcile.plan`); this module adds
what concerns the instances. Names compare as the backend type's keys (exactly, on nodes); a
model's instance, its weights and its served name are all the declared name.

- Start: a desired model whose weights are present and which has no instance is started, once
  the observation is fresh. It needs ``vllm.gpus`` GPUs, else its tensor-parallel size, else 1;
  the backend's free GPUs are handed out to its starts in model-name order, and a start that
  does not fit is drift (declared, not served) with code ``unplaceable`` and the agent's words
  ("needs 1 GPU, 0 free"). An inventory the agent did not report leaves placing to the agent.
- Restart: an instance whose engine fingerprint differs from the declared one
  (`engineargs.fingerprint` of `engineargs.agent_body`) is restarted (stop, then start); one
  whose agent reports no spec (an empty fingerprint) is left alone. Across
  the fleet restarts roll (`roll`): at most one copy of a model per cycle, and none while
  another copy of it is not ready; the deferred ones are drift saying what they wait for. A
  crash-looping instance serves nothing, so its restart is never held back.
- Stop: an instance of a model not desired here is stopped when the desired state was read
  completely, the observation is fresh, the backend is in a pool, and llmctl pulled or started
  that model (the managed record) or the policy is ``all``. Stopping deletes nothing, so
  ``prune: none`` and an empty desired set, which keep weights, do not keep llmctl's own
  instances holding GPUs nobody declared a use for. Stopping frees its weights: where the
  stop is planned, the weights are pruned in the same plan by the usual prune rules as if
  no instance ran from them (`freed`), and applied after the stop. A kept instance whose
  weights are listed is reported through its weights' drift; one without, as drift itself.
- Starting, ready and crash-looping instances are otherwise only reported (conditions).

Called by `plan._decide` (`decide`, `freed`) and `plan.compute` (`roll`). Pure and
deterministic like the planner; must not import the adapters (`runtimestate.backends`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from runtimestate.desired import names, spec
from runtimestate.reconcile import plan, planview, steps

_Running = Mapping[names.ModelKey, planview.InstanceView]


def decide(facts: plan.Facts) -> list[steps.Action]:
    """The instance actions and drift of one node backend (unsorted; the planner sorts)."""
    observed = facts.view.observed
    if observed is None:
        return []  # nothing is known about the backend; its status says why
    kind = facts.view.type
    running = {names.key(i.name, kind): i for i in observed.instances}
    weights = {names.key(m.name, kind) for m in observed.models}
    result = _declared(facts, running, weights, observed.gpus_free)
    if facts.desired_complete:  # else "not desired" cannot be known
        result += _undeclared(facts, running, weights)
    return result


def freed(facts: plan.Facts, actions: list[steps.Action]) -> frozenset[names.ModelKey]:
    """The weights whose instance ``actions`` stop: prunable as if no instance ran them."""
    observed = facts.view.observed
    kind = facts.view.type
    stopped = {names.key(a.model, kind) for a in actions if isinstance(a, steps.StopInstance)}
    if observed is None or not stopped:
        return frozenset()
    return frozenset(
        names.key(i.weights, kind) for i in observed.instances if names.key(i.name, kind) in stopped
    )


def _declared(
    facts: plan.Facts, running: _Running, weights: set[names.ModelKey], free: int | None
) -> list[steps.Action]:
    result: list[steps.Action] = []
    for key in sorted(facts.desired):
        model = facts.desired[key]
        found = running.get(key)
        action: steps.Action | None
        if found is not None:
            action = _restart(facts, model, found)
        elif key in weights:
            action, free = _start(facts, model, free)
        else:
            action = None  # the weights are pulled first (the planner's model rules)
        if action is not None:
            result.append(action)
    return result


def _start(
    facts: plan.Facts, model: planview.DesiredModel, free: int | None
) -> tuple[steps.Action, int | None]:
    """Start ``model``, or why not; and the free GPUs left after it."""
    name = facts.view.name
    if not facts.fresh:
        text = "weights present, no instance; the start waits for a fresh observation"
        return _drift(name, model.name, steps.ReasonCode.OBSERVATION_STALE, text), free
    need = model.gpus_needed
    if free is not None:
        if need > free:
            noun = "GPU" if need == 1 else "GPUs"
            text = f"needs {need} {noun}, {free} free"
            return _drift(name, model.name, steps.ReasonCode.UNPLACEABLE, text), free
        free -= need
    reason = steps.Reason(steps.ReasonCode.NO_INSTANCE, "weights present, no instance")
    return steps.StartInstance(name, model.name, model.name, model.vllm, reason), free


def _restart(
    facts: plan.Facts, model: planview.DesiredModel, found: planview.InstanceView
) -> steps.Action | None:
    if not found.engine or found.engine == model.engine or found.state == planview.STOPPING:
        return None  # an agent that does not report the spec it runs is never restarted
    name = facts.view.name
    if not facts.fresh:
        text = "engine arguments changed; the restart waits for a fresh observation"
        return _drift(name, model.name, steps.ReasonCode.OBSERVATION_STALE, text)
    reason = steps.Reason(steps.ReasonCode.ENGINE_CHANGED, "engine arguments changed")
    if found.state == planview.CRASH_LOOP:
        text = "engine arguments changed; crash-looping, so not held back"
        reason = steps.Reason(steps.ReasonCode.CRASH_LOOP, text)
    return steps.RestartInstance(name, model.name, found.weights, model.vllm, reason)


def _undeclared(
    facts: plan.Facts, running: _Running, weights: set[names.ModelKey]
) -> list[steps.Action]:
    view = facts.view
    result: list[steps.Action] = []
    for key in sorted(running):
        if key in facts.desired:
            continue
        found = running[key]
        kept = _kept(facts, key)
        if kept is None:
            result.append(steps.StopInstance(view.name, found.name, _stop_reason(view.prune)))
        elif names.key(found.weights, view.type) not in weights:
            kind = steps.DriftKind.SERVED_NOT_DECLARED
            result.append(steps.ReportDrift(view.name, kind, found.name, kept))
    return result


def _kept(facts: plan.Facts, key: names.ModelKey) -> steps.Reason | None:
    """Why an undeclared model's instance keeps running (the first rule), or None to stop it."""
    view = facts.view
    policy = view.prune
    code = steps.ReasonCode
    rules = (
        (not view.in_pool, code.NOT_IN_POOL, "the backend is in no pool; observed only"),
        (not facts.fresh, code.OBSERVATION_STALE, "observation is stale; no stop"),
        (
            policy is not spec.PrunePolicy.ALL and key not in facts.managed,
            code.NOT_MANAGED,
            f"not started by llmctl; prune: {policy.value} keeps it",
        ),
    )
    for applies, reason_code, text in rules:
        if applies:
            return steps.Reason(reason_code, text)
    return None


def _stop_reason(policy: spec.PrunePolicy) -> steps.Reason:
    if policy is spec.PrunePolicy.ALL:
        return steps.Reason(steps.ReasonCode.UNDECLARED, "not declared; prune: all")
    return steps.Reason(
        steps.ReasonCode.UNDECLARED_MANAGED, "started by llmctl, no longer declared"
    )


def _drift(backend: str, model: str, code: steps.ReasonCode, text: str) -> steps.ReportDrift:
    kind = steps.DriftKind.DECLARED_NOT_SERVED
    return steps.ReportDrift(backend, kind, model, steps.Reason(code, text))


def roll(
    decisions: Mapping[str, plan.Decision], views: Mapping[str, planview.BackendView]
) -> dict[str, tuple[steps.Action, ...]]:
    """The decisions the rolling-restart rule changes, by backend, sorted as the planner sorts.

    Per model across the fleet: a restart waits while another copy of the model is not ready
    (starting, crash-looping, stopping); of the others, the one on the first backend by name
    goes and the rest wait a cycle. A crash-looping instance's restart always goes."""
    nodes = sorted(name for name, view in views.items() if view.runs_instances)
    restarts: dict[str, list[steps.RestartInstance]] = defaultdict(list)
    for name in nodes:
        for action in decisions[name].actions:
            if isinstance(action, steps.RestartInstance):
                restarts[action.model].append(action)
    if not restarts:
        return {}
    unready = _unready(views[name] for name in nodes)
    deferred: dict[steps.RestartInstance, steps.ReportDrift] = {}
    for model, group in restarts.items():
        going: str | None = None
        for action in group:  # in backend-name order
            if action.reason.code is steps.ReasonCode.CRASH_LOOP:
                continue
            others = sorted(unready.get(model, set()) - {action.backend})
            if others:
                text = f"restart waits for the copy on {others[0]} to be ready"
            elif going is not None:
                text = f"restart waits: one copy at a time, {going} restarts first"
            else:
                going = action.backend
                continue
            code = steps.ReasonCode.RESTART_WAITS
            deferred[action] = _drift(action.backend, action.model, code, text)
    changed: dict[str, tuple[steps.Action, ...]] = {}
    for backend in sorted({action.backend for action in deferred}):
        kept = [_deferred(a, deferred) for a in decisions[backend].actions]
        changed[backend] = tuple(sorted(kept, key=steps.order))
    return changed


def _deferred(
    action: steps.Action, deferred: Mapping[steps.RestartInstance, steps.ReportDrift]
) -> steps.Action:
    if isinstance(action, steps.RestartInstance):
        return deferred.get(action, action)
    return action


def _unready(views: Iterable[planview.BackendView]) -> dict[str, set[str]]:
    """Per model name, the backends where an instance of it is not ready."""
    found: dict[str, set[str]] = defaultdict(set)
    for view in views:
        if view.observed is not None:
            for instance in view.observed.instances:
                if instance.state != planview.READY:
                    found[instance.name].add(view.name)
    return found

"""How a new process resumes probing from the states the last one persisted.

`resumed_record` turns a backend's persisted state back into the probe record the backend
cycle keeps (`probing.Record`), so a restarted controller does not forget a backend was failing
or what it last served; `last_observation` is the observation that state was built from. Called
by `observation` when it first meets a backend. Pure: the states arrive read by `status`.
"""

from __future__ import annotations

from runtimestate import snapshot
from runtimestate.backends import base
from runtimestate.desired import spec
from runtimestate.reconcile import probing


def resumed_record(state: snapshot.LLMState) -> probing.Record[base.Observation]:
    """The probe record a new process resumes from a backend's persisted state: its last
    success, whether it was failing and why, and the model list it last served (Ready or
    Degraded only: an Unreachable state has none). See `probing.resumed`."""
    failing = state.phase in (snapshot.Phase.DEGRADED, snapshot.Phase.UNREACHABLE)
    kept = state.phase in (snapshot.Phase.READY, snapshot.Phase.DEGRADED)
    reachable = state.condition("Reachable")
    return probing.resumed(
        state.last_ok_at,
        last_observation(state) if kept else None,
        failing,
        state.error,
        reachable.reason if reachable is not None and failing else None,
    )


def last_observation(state: snapshot.LLMState) -> base.Observation:
    """The observation a persisted state was built from, as far as the state tells it
    (the inverse of `conditions.pulled`; declared overrides are applied again when built)."""
    models = tuple(
        base.ObservedModel(
            name=m.name,
            model=m.model,
            digest=m.digest or None,
            size=m.size or None,
            modified_at=m.modified_at,
            details=base.ModelDetails(
                family=m.family or None,
                parameter_size=m.parameter_size or None,
                quantization_level=m.quantization_level or None,
                format=m.format or None,
            ),
            context_length=m.context_length,
            capabilities=frozenset(
                cap
                for cap, on in (
                    (spec.Capability.CHAT, m.can_chat),
                    (spec.Capability.EMBED, m.can_embed),
                    (spec.Capability.PROMPT, m.can_prompt),
                    (spec.Capability.STREAM, m.can_stream),
                )
                if on
            ),
            loaded=m.loaded,
        )
        for m in state.pulled_models
    )
    load = state.load
    metrics = None
    if load.running is not None and load.waiting is not None:
        metrics = base.EngineMetrics(load.running, load.waiting, load.kv_cache_usage)
    return base.Observation(models, healthy=True, version=state.version, metrics=metrics)

"""What a new process resumes from a persisted backend state, and a snapshot nobody can change."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random

import pytest

from runtimestate import snapshot
from runtimestate.reconcile import conditions, probing, resumption

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
POLICY = probing.Policy(grace=dt.timedelta(minutes=2))
P = snapshot.Phase

MODEL = snapshot.PulledModel(
    name="llama3.2:1b",
    model="llama3.2:1b",
    digest="ab" * 32,
    size=1300,
    modified_at=T0,
    family="llama",
    parameter_size="1.2B",
    quantization_level="Q8_0",
    format="gguf",
    context_length=131072,
    can_chat=True,
    can_prompt=True,
    can_stream=True,
    loaded=True,
)


def _state(phase: P, *, last_ok_at: dt.datetime | None = T0) -> snapshot.LLMState:
    failing = phase in (P.DEGRADED, P.UNREACHABLE)
    reachable = (
        snapshot.Condition("Reachable", False, "timeout", "timed out")
        if failing
        else snapshot.Condition("Reachable", True, "ok")
    )
    return snapshot.LLMState(
        id=1,
        name="gpu-1",
        type="ollama",
        base_url="http://127.0.0.1:11434",
        models=("llama3.2:1b",),
        pulled_models=(MODEL,) if phase is not P.UNREACHABLE else (),
        phase=phase,
        error="timed out" if failing else None,
        conditions=(reachable,),
        last_ok_at=last_ok_at,
        version="0.30.0",
        load=snapshot.Load(running=2, waiting=1, kv_cache_usage=0.5),
    )


def _fail(record: probing.Record[object], now: dt.datetime) -> probing.Record[object]:
    return probing.failed(record, "refused", "unreachable", now, POLICY, random.Random(1))


def test_the_last_observation_rebuilds_the_models_a_state_was_built_from() -> None:
    observation = resumption.last_observation(_state(P.READY))
    (model,) = observation.models
    assert conditions.pulled(model) == MODEL
    assert observation.version == "0.30.0"
    assert observation.metrics is not None
    assert (observation.metrics.running, observation.metrics.kv_cache_usage) == (2, 0.5)


@pytest.mark.parametrize("phase", [P.READY, P.DEGRADED])
def test_a_resumed_backend_failing_within_grace_of_its_last_success_is_degraded(
    phase: P,
) -> None:
    record = resumption.resumed_record(_state(phase))
    assert record.due(T0 + dt.timedelta(minutes=1))  # probed at once, whatever its backoff
    failing = _fail(record, T0 + dt.timedelta(minutes=1))
    assert failing.phase(T0 + dt.timedelta(minutes=1), POLICY) is P.DEGRADED
    kept = failing.usable(T0 + dt.timedelta(minutes=1), POLICY)
    assert kept is not None
    assert [m.name for m in kept.models] == ["llama3.2:1b"]
    # Grace counts from the last success, not from this process's first failure.
    assert failing.phase(T0 + dt.timedelta(minutes=2), POLICY) is P.UNREACHABLE


def test_a_resumed_backend_whose_last_success_is_older_than_grace_is_unreachable() -> None:
    record = resumption.resumed_record(_state(P.READY))
    later = T0 + dt.timedelta(minutes=3)
    assert _fail(record, later).phase(later, POLICY) is P.UNREACHABLE


def test_a_resumed_ready_backend_stays_ready_and_a_success_starts_afresh() -> None:
    record = resumption.resumed_record(_state(P.READY))
    assert (record.failures, record.phase(T0, POLICY)) == (0, P.READY)
    fresh = probing.succeeded(record, object(), T0 + dt.timedelta(minutes=5))
    assert (fresh.failures, fresh.first_failure_at) == (0, None)


def test_a_resumed_failing_backend_resumes_its_backoff_and_keeps_its_error() -> None:
    record = resumption.resumed_record(_state(P.DEGRADED))
    assert (record.failures, record.last_error, record.last_reason) == (1, "timed out", "timeout")
    assert _fail(record, T0).failures == 2  # the next delay is the second step, not the first


def test_an_unreachable_or_never_answered_state_resumes_no_model_list() -> None:
    assert resumption.resumed_record(_state(P.UNREACHABLE)).last_good is None
    never = resumption.resumed_record(_state(P.DEGRADED, last_ok_at=None))
    assert never.last_good is None
    assert _fail(never, T0).phase(T0, POLICY) is P.UNREACHABLE


def test_a_snapshot_cannot_be_changed_by_its_readers_nor_by_its_builder() -> None:
    states = {"gpu-1": _state(P.READY)}
    taken = snapshot.Snapshot(states, 3, T0)
    with pytest.raises(TypeError):
        taken.backends["gpu-2"] = _state(P.READY)  # type: ignore[index]
    states["gpu-2"] = _state(P.READY)
    assert list(taken.backends) == ["gpu-1"]
    assert taken == snapshot.Snapshot({"gpu-1": _state(P.READY)}, 3, T0)
    assert dataclasses.replace(taken, cycle=4).backends == taken.backends
    assert {**taken.backends} == {"gpu-1": states["gpu-1"]}
    encoded = json.dumps({n: snapshot.state_to_dict(s) for n, s in taken.backends.items()})
    assert snapshot.state_from_dict(json.loads(encoded)["gpu-1"]) == states["gpu-1"]


def test_a_removal_message_names_the_backend_and_nothing_else() -> None:
    assert json.loads(snapshot.removed_to_wire("gpu-1")) == {"name": "gpu-1", "removed": True}

"""Snapshot values survive their wire form unchanged (the status table and NATS use it)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from runtimestate import snapshot

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _state() -> snapshot.LLMState:
    return snapshot.LLMState(
        id=7,
        name="gpu-1",
        type="ollama",
        base_url="http://127.0.0.1:11434",
        models=("llama3.2:1b",),
        pulled_models=(
            snapshot.PulledModel(
                name="llama3.2:1b",
                model="llama3.2:1b",
                digest="ab" * 32,
                size=1300,
                modified_at=T0,
                family="llama",
                context_length=131072,
                can_chat=True,
                can_prompt=True,
                can_stream=True,
                loaded=True,
            ),
        ),
        phase=snapshot.Phase.DEGRADED,
        error="timed out after 3.0 s",
        conditions=(snapshot.Condition("Reachable", False, "timeout", "timed out"),),
        observed_generation=3,
        last_ok_at=T0,
        version="0.30.0",
        load=snapshot.Load(running=2, waiting=1, kv_cache_usage=0.5),
        downloads_pending=(snapshot.DownloadView("01J", "qwen2:0.5b", "running", 42.0),),
        downloads_held=(
            snapshot.DownloadView("01K", "nope:1b", "failed", None, "model_not_found"),
        ),
    )


def test_a_state_round_trips_through_its_wire_form() -> None:
    state = _state()
    assert snapshot.from_wire(snapshot.to_wire(state)) == state


def test_the_wire_form_is_versioned_json_with_plain_values() -> None:
    doc = snapshot.state_to_dict(_state())
    assert doc["v"] == snapshot.WIRE_VERSION
    assert doc["phase"] == "Degraded"
    assert doc["pulled_models"][0]["modified_at"] == "2026-01-01T12:00:00+00:00"
    assert doc["conditions"][0] == {
        "type": "Reachable", "status": False, "reason": "timeout", "message": "timed out",
    }  # fmt: skip


def test_conditions_are_found_by_type() -> None:
    state = _state()
    found = state.condition("Reachable")
    assert found is not None
    assert found.reason == "timeout"
    assert state.condition("ModelsReady") is None


def test_an_adapters_parent_and_the_placed_adapters_survive_the_wire_form() -> None:
    card = snapshot.PulledModel(name="sql", model="/adapters/sql", parent="llama3.2:1b")
    state = dataclasses.replace(
        _state(), pulled_models=(*_state().pulled_models, card), adapters=("sql", "chat")
    )
    again = snapshot.from_wire(snapshot.to_wire(state))
    assert again.pulled_models[-1].parent == "llama3.2:1b"
    assert again.adapters == ("sql", "chat")


def test_a_state_written_before_adapters_loads_without_them() -> None:
    doc = snapshot.state_to_dict(_state())
    del doc["adapters"]
    for model in doc["pulled_models"]:
        del model["parent"]
    old = snapshot.state_from_dict(doc)
    assert old.adapters == ()
    assert old.pulled_models[0].parent is None


def test_a_backends_disk_round_trips_and_a_state_without_one_reads_as_none() -> None:
    disk = snapshot.DiskView("declared", total=20_000, used=18_800, free=1_200)
    state = dataclasses.replace(_state(), disk=disk)
    assert snapshot.from_wire(snapshot.to_wire(state)).disk == disk
    older = snapshot.state_to_dict(_state())
    del older["disk"]  # a document written before issue 16
    assert snapshot.state_from_dict(older).disk is None

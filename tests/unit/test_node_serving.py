"""A node agent's models are served by their instances: status shows the instances, and the
resolver routes a model to its ready instance's URL, never to the agent itself."""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller import metrics
from runtimestate import credentials, snapshot
from runtimestate.backends import base, nodereplies
from runtimestate.reconcile import serving
from runtimestate.resolver import candidates, resolution

AGENT = "http://gpu-7:8700"
SERVED = "http://127.0.0.1:41001/v1"


def _instance(name: str, state: base.InstanceState, url: str) -> base.ObservedInstance:
    return base.ObservedInstance(
        name=name, weights=name, state=state, base_url=url, engine="{}", gpus=(0,), restarts=2,
        last_error="exit 1", log_tail=("boom",),
    )  # fmt: skip


def _state(kind: str, pulled: tuple[snapshot.PulledModel, ...]) -> snapshot.LLMState:
    return snapshot.LLMState(
        id=3,
        name="gpu-7",
        type=kind,
        base_url=AGENT,
        models=(),
        pulled_models=pulled,
        phase=snapshot.Phase.READY,
        last_ok_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        instances=(snapshot.InstanceView("org/a", "ready", SERVED, (0, 1), 1, "x", ("l1",)),),
    )


def test_a_node_model_is_a_candidate_at_its_instance_url_only_when_it_has_one() -> None:
    state = _state(
        "node",
        (
            snapshot.PulledModel("org/a", "org/a", can_chat=True, base_url=SERVED),
            snapshot.PulledModel("org/cached-only", "org/cached-only", can_chat=True),
        ),
    )
    found = candidates.candidates_of(state)
    assert [(c.model, c.base_url) for c in found] == [("org/a", SERVED)]


def test_a_model_without_its_own_url_on_another_backend_type_is_at_the_backends_url() -> None:
    state = _state("vllm", (snapshot.PulledModel("org/a", "org/a", can_chat=True),))
    assert [c.base_url for c in candidates.candidates_of(state)] == [AGENT]


def test_only_ready_instances_give_their_model_a_url() -> None:
    running = [
        _instance("org/a", base.InstanceState.READY, SERVED),
        _instance("org/b", base.InstanceState.STARTING, "http://127.0.0.1:41002/v1"),
        _instance("org/c", base.InstanceState.CRASH_LOOP, "http://127.0.0.1:41003/v1"),
    ]
    assert serving.urls(running) == {"org/a": SERVED}
    shown = serving.views(reversed(running))
    assert [(v.name, v.state) for v in shown] == [
        ("org/a", "ready"), ("org/b", "starting"), ("org/c", "CrashLoopBackOff"),
    ]  # fmt: skip
    assert shown[2] == snapshot.InstanceView(
        "org/c", "CrashLoopBackOff", "http://127.0.0.1:41003/v1", (0,), 2, "exit 1", ("boom",)
    )


def test_instances_and_model_urls_survive_the_status_tables_json_round_trip() -> None:
    state = _state("node", (snapshot.PulledModel("org/a", "org/a", base_url=SERVED),))
    assert snapshot.from_wire(snapshot.to_wire(state)) == state


def test_a_status_row_written_before_instances_existed_still_loads() -> None:
    doc = snapshot.state_to_dict(_state("vllm", (snapshot.PulledModel("m", "m"),)))
    del doc["instances"]
    del doc["pulled_models"][0]["base_url"]
    loaded = snapshot.state_from_dict(doc)
    assert loaded.instances == ()
    assert loaded.pulled_models[0].base_url is None


def test_a_provider_on_a_node_never_hands_out_the_agents_token() -> None:
    token = credentials.Secret("agent-t0ken")
    pulled = (snapshot.PulledModel("org/a", "org/a", base_url=SERVED),)
    on_node = candidates.candidates_of(_state("node", pulled))[0]
    on_vllm = candidates.candidates_of(_state("vllm", pulled))[0]
    assert resolution.Provider(on_node, lambda backend: token).credentials() is None
    assert resolution.Provider(on_vllm, lambda backend: token).credentials() is token


def test_a_node_model_has_the_context_length_its_instance_was_started_with() -> None:
    cached = [{"name": "org/tiny", "path": "/c/hub/models--org--tiny/snapshots/abc", "size": 9}]
    listing = {
        "instances": [
            {
                "name": "org/tiny", "state": "ready", "base_url": "http://n:9/v1", "gpus": [0],
                "weights": "org/tiny", "engine": {"max_model_len": 4096}, "gpus_requested": None,
            }
        ]
    }  # fmt: skip
    running = nodereplies.instances(listing, cached)
    (model,) = nodereplies.models(cached, running)
    assert (model.loaded, model.context_length) == (True, 4096)
    (idle,) = nodereplies.models(cached, ())
    assert (idle.loaded, idle.context_length) == (False, None)


def test_weights_without_a_ready_instance_do_not_count_as_a_ready_model() -> None:
    # backend list's READY column and the demo's convergence read `serving`, as the resolver.
    ready = snapshot.PulledModel(name="org/a", model="org/a", base_url="http://n:1/v1")
    cached = snapshot.PulledModel(name="org/b", model="org/b")
    state = snapshot.LLMState(
        id=1, name="gpu-1", type="node", base_url="http://n:8700", models=("org/a", "org/b"),
        pulled_models=(ready, cached), phase=snapshot.Phase.READY,
    )  # fmt: skip
    assert state.serving == (ready,)
    assert metrics.pairs(snapshot.Snapshot(backends={"gpu-1": state})) == (2, 1)
    ollama = dataclasses.replace(state, type="ollama")
    assert ollama.serving == (ready, cached)

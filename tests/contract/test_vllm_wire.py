"""Raw HTTP details of the vLLM emulator: versions, metrics, LoRA routes, auth (PROTOCOLS §3)."""

from __future__ import annotations

import httpx
import pytest

from emulators import faults, vllm_node
from emulators import vllm as emulator

CHAT = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}


async def test_health_is_200_with_an_empty_body_and_503_when_dead(
    vllm_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=vllm_emu.url) as http:
        alive = await http.get("/health")
        vllm_emu.nodes[0].healthy = False
        dead = await http.get("/health")

    assert (alive.status_code, alive.content) == (200, b"")
    assert (dead.status_code, dead.content) == (503, b"")


async def test_unknown_routes_and_methods_get_fastapi_detail(vllm_emu: emulator.Emulator) -> None:
    async with httpx.AsyncClient(base_url=vllm_emu.url) as http:
        missing = await http.get("/v1/nothing")
        wrong = await http.post("/v1/models")
        embeddings = await http.post("/v1/embeddings", json={"input": "x"})

    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})
    assert embeddings.status_code == 404  # a generate model has no embeddings route


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            "0.33.0",
            {
                "error": {
                    "message": "The model `nope` does not exist. Valid aliases: my-model.",
                    "type": "NotFoundError",
                    "param": "model",
                    "code": 404,
                }
            },
        ),
        (
            "0.9.2",
            {
                "object": "error",
                "message": "The model `nope` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            },
        ),
    ],
)
async def test_the_error_envelope_follows_the_emulated_version(
    version: str, expected: dict[str, object]
) -> None:
    async with (
        emulator.running(served_model_names=["my-model"], version=version) as emu,
        httpx.AsyncClient(base_url=emu.url) as http,
    ):
        response = await http.post("/v1/chat/completions", json=CHAT)
        version_body = (await http.get("/version")).json()

    assert response.status_code == 404
    assert response.json() == expected
    assert version_body == {"version": version}


async def test_a_missing_messages_field_is_a_400_validation_error(
    vllm_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=vllm_emu.url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "my-model"})
        not_json = await http.post(
            "/v1/chat/completions", content=b"x", headers={"Content-Type": "text/plain"}
        )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body.messages"
    assert response.json()["error"]["type"] == "Bad Request"
    assert not_json.status_code == 400
    assert "Unsupported Media Type" in not_json.json()["error"]["message"]


@pytest.mark.parametrize(
    ("version", "kv", "gpu", "engine"),
    [("0.33.0", True, False, True), ("0.9.2", True, True, True), ("0.8.5", False, True, False)],
)
async def test_metric_names_and_labels_follow_the_emulated_version(
    version: str, kv: bool, gpu: bool, engine: bool
) -> None:
    async with emulator.running(served_model_names=["m"], version=version) as emu:
        node = emu.nodes[0]
        node.running, node.waiting, node.kv_cache_usage = 3, 2, 0.5
        async with httpx.AsyncClient(base_url=emu.url) as http:
            text = (await http.get("/metrics")).text

    labels = 'engine="0",model_name="m"' if engine else 'model_name="m"'
    assert f"vllm:num_requests_running{{{labels}}} 3.0" in text
    assert f"vllm:num_requests_waiting{{{labels}}} 2.0" in text
    assert (f"vllm:kv_cache_usage_perc{{{labels}}} 0.5" in text) is kv
    assert (f"vllm:gpu_cache_usage_perc{{{labels}}} 0.5" in text) is gpu


async def test_metrics_gauges_are_settable_through_the_admin_endpoint(
    vllm_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=vllm_emu.url) as http:
        patched = await http.post("/_emulator/state", json={"waiting": 7, "kv_cache_usage": 0.25})
        text = (await http.get("/metrics")).text

    assert patched.status_code == 200
    assert 'vllm:num_requests_waiting{engine="0",model_name="my-model"} 7.0' in text
    assert 'vllm:kv_cache_usage_perc{engine="0",model_name="my-model"} 0.25' in text


async def test_lora_routes_do_not_exist_unless_enabled(vllm_emu: emulator.Emulator) -> None:
    body = {"lora_name": "a", "lora_path": "/adapters/a"}
    async with httpx.AsyncClient(base_url=vllm_emu.url) as http:
        response = await http.post("/v1/load_lora_adapter", json=body)

    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


async def test_lora_load_and_unload_answer_plain_text_and_change_the_model_list() -> None:
    body = {"lora_name": "sql", "lora_path": "/adapters/sql"}
    async with (
        emulator.running(served_model_names=["base"], enable_lora=True) as emu,
        httpx.AsyncClient(base_url=emu.url) as http,
    ):
        loaded = await http.post("/v1/load_lora_adapter", json=body)
        cards = (await http.get("/v1/models")).json()["data"]
        again = await http.post("/v1/load_lora_adapter", json=body)
        unloaded = await http.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})
        unknown = await http.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})

    assert (loaded.status_code, loaded.text) == (
        200,
        "Success: LoRA adapter 'sql' added successfully.",
    )
    assert [(c["id"], c["parent"], c["root"], c["max_model_len"]) for c in cards] == [
        ("base", None, vllm_node.DEFAULT_MODEL, 32768),
        ("sql", "base", "/adapters/sql", None),
    ]
    assert again.status_code == 400
    assert again.json()["error"]["type"] == "InvalidUserInput"
    assert again.json()["error"]["message"].startswith(
        "The lora adapter 'sql' has already been loaded."
    )
    assert (unloaded.status_code, unloaded.text) == (
        200,
        "Success: LoRA adapter 'sql' removed successfully.",
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "The lora adapter 'sql' cannot be found."


async def test_lora_errors_for_missing_fields_and_paths_use_the_old_flat_envelope() -> None:
    async with emulator.running(enable_lora=True, version="0.9.2") as emu:
        emu.nodes[0].missing_lora_paths.add("/nowhere")
        async with httpx.AsyncClient(base_url=emu.url) as http:
            empty = await http.post("/v1/load_lora_adapter", json={"lora_name": "a"})
            missing = await http.post(
                "/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "/nowhere"}
            )

    assert empty.status_code == 400
    assert empty.json()["message"] == "Both 'lora_name' and 'lora_path' must be provided."
    assert missing.status_code == 404
    assert missing.json() == {
        "object": "error",
        "message": "Loading lora a failed: No adapter found for /nowhere",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }


async def test_the_api_key_guards_only_v1_paths() -> None:
    async with emulator.running(api_key="k") as emu, httpx.AsyncClient(base_url=emu.url) as http:
        health = await http.get("/health")
        metrics = await http.get("/metrics")
        refused = await http.get("/v1/models")
        allowed = await http.get("/v1/models", headers={"Authorization": "Bearer k"})

    assert health.status_code == 200
    assert metrics.status_code == 200
    assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"})
    assert allowed.status_code == 200


async def _read_frames(http: httpx.AsyncClient, body: object, frames: list[str]) -> None:
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line:
                frames.append(line)  # kept even when the reset interrupts the loop


async def test_a_streamed_chat_can_be_reset_after_some_frames(vllm_emu: emulator.Emulator) -> None:
    fault = faults.Fault(faults.FaultKind.RESET, after_lines=2)
    vllm_emu.set_fault(fault, endpoint="/v1/chat/completions")
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    frames: list[str] = []

    async with httpx.AsyncClient(base_url=vllm_emu.url) as http:
        with pytest.raises(httpx.TransportError):
            await _read_frames(http, body, frames)

    assert len(frames) == 2
    assert all(f.startswith("data: {") for f in frames)


async def test_a_streamed_chat_ends_with_done(vllm_emu: emulator.Emulator) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with httpx.AsyncClient(base_url=vllm_emu.url) as http:
        response = await http.post("/v1/chat/completions", json=body)

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")


async def test_many_nodes_are_independent() -> None:
    async with emulator.running(nodes=50, served_model_names=["m"]) as emu:
        emu.nodes[7].running = 4
        async with httpx.AsyncClient(base_url=emu.url) as http:
            seven = (await http.get(emu.node_url(7) + "/metrics")).text
            eight = (await http.get(emu.node_url(8) + "/metrics")).text
            beyond = await http.get(emu.url + "/nodes/50/health")

    assert 'vllm:num_requests_running{engine="0",model_name="m"} 4.0' in seven
    assert 'vllm:num_requests_running{engine="0",model_name="m"} 0.0' in eight
    assert beyond.status_code == 404
    assert emu.nodes[7].requests == {"GET /metrics": 1}

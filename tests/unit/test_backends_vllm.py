"""The vLLM adapter against an in-memory `httpx.MockTransport`: listing, metrics parsing,
both error envelopes, LoRA load/unload, and failure mapping."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from runtimestate import errors
from runtimestate.backends import base, transport, vllm

FAST = base.Timeouts(connect=0.3, read=0.3, stall=0.3, total=0.3)
# Answers from the mock transport never wait: a deadline they could meet only on an idle
# machine would make the tests flaky, so only the timeout test uses FAST.
ROOMY = base.Timeouts(connect=10.0, read=10.0, stall=10.0, total=10.0)

MODELS = {
    "object": "list",
    "data": [
        {
            "id": "qwen",
            "object": "model",
            "root": "/models/Qwen2.5",
            "parent": None,
            "max_model_len": 32768,
        },
        {
            "id": "qwen-embed",
            "object": "model",
            "root": "/m/e",
            "parent": None,
            "max_model_len": 512,
        },
        {
            "id": "sql-lora",
            "object": "model",
            "root": "/adapters/sql",
            "parent": "qwen",
            "max_model_len": None,
        },
    ],
}

METRICS_V33 = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 2.0
vllm:num_requests_running{engine="1",model_name="qwen"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 4.0
vllm:num_requests_waiting{engine="1",model_name="qwen"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="qwen"} 0.75
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="qwen"} 1234.0
"""

METRICS_V09 = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="qwen"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="qwen"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="qwen"} 0.5
"""


class FakeVllm:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.override: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/prefix")
        if path in self.override:
            return self.override[path](request)
        answers = {
            "/v1/models": httpx.Response(200, json=MODELS),
            "/health": httpx.Response(200),
            "/version": httpx.Response(200, json={"version": "0.33.0"}),
            "/metrics": httpx.Response(200, text=METRICS_V33),
        }
        return answers.get(path, httpx.Response(404, json={"detail": "Not Found"}))


def backend(fake: Any, **kwargs: Any) -> vllm.VllmBackend:
    kwargs.setdefault("timeouts", ROOMY)
    return vllm.VllmBackend(
        "http://127.0.0.1:8000/prefix", name="gpu-1", transport_=httpx.MockTransport(fake), **kwargs
    )


def test_parse_metrics_sums_engines_and_takes_the_fullest_kv_cache() -> None:
    metrics = vllm.parse_metrics(METRICS_V33)
    assert metrics == base.EngineMetrics(running=3.0, waiting=4.0, kv_cache_usage=0.75)


def test_parse_metrics_accepts_the_old_gpu_cache_usage_name() -> None:
    assert vllm.parse_metrics(METRICS_V09).kv_cache_usage == 0.5


def test_parse_metrics_prefers_the_current_name_when_both_are_present() -> None:
    both = METRICS_V09 + 'vllm:kv_cache_usage_perc{model_name="qwen"} 0.125\n'
    assert vllm.parse_metrics(both).kv_cache_usage == 0.125


def test_parse_metrics_rejects_text_cut_off_mid_line() -> None:
    with pytest.raises(transport.MalformedReply, match="truncated"):
        vllm.parse_metrics(METRICS_V33[: METRICS_V33.index("# TYPE vllm:prompt") + 20])


def test_parse_metrics_without_kv_gauges_reports_no_usage() -> None:
    text = "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n"
    assert vllm.parse_metrics(text).kv_cache_usage is None


@pytest.mark.parametrize(
    "text", ["", "process_cpu_seconds_total 3\n", "garbage {{{ x\n", '{"a": 1}']
)
def test_parse_metrics_rejects_text_without_the_request_gauges(text: str) -> None:
    with pytest.raises(transport.MalformedReply):
        vllm.parse_metrics(text)


async def test_observe_lists_served_models_with_context_and_lora_parents() -> None:
    async with backend(FakeVllm()) as adapter:
        observation = await adapter.observe()
    qwen, embed, lora = observation.models
    assert (qwen.name, qwen.model, qwen.context_length, qwen.loaded) == (
        "qwen",
        "/models/Qwen2.5",
        32768,
        True,
    )
    assert qwen.capabilities == {"chat", "prompt", "stream"}
    assert embed.capabilities == {"embed"}
    assert (lora.details.parent_model, lora.context_length) == ("qwen", 32768)
    assert observation.healthy
    assert observation.version == "0.33.0"
    assert observation.metrics == base.EngineMetrics(3.0, 4.0, 0.75)


async def test_observe_degrades_when_health_version_or_metrics_fail() -> None:
    fake = FakeVllm()
    fake.override["/health"] = lambda _: httpx.Response(503)
    fake.override["/version"] = lambda _: httpx.Response(200, content=b"{")
    fake.override["/metrics"] = lambda _: httpx.Response(200, text="nothing here")
    async with backend(fake) as adapter:
        observation = await adapter.observe()
    assert len(observation.models) == 3
    assert (observation.healthy, observation.version, observation.metrics) == (False, None, None)


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(_: httpx.Request) -> httpx.Response:
        raise exc

    return handler


NESTED_404 = {
    "error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}
}
FLAT_500 = {"object": "error", "message": "engine died", "type": "InternalServerError", "code": 500}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (_raise(httpx.ConnectError("refused")), errors.BackendUnavailable),
        (_raise(httpx.ReadTimeout("slow")), errors.BackendTimedOut),
        (_raise(httpx.RemoteProtocolError("peer closed")), errors.BackendUnavailable),
        (lambda _: httpx.Response(500, json=FLAT_500), errors.ServerError),
        (lambda _: httpx.Response(401, json={"error": "Unauthorized"}), errors.Unauthorized),
        (lambda _: httpx.Response(404, json={"detail": "Not Found"}), errors.RequestRejected),
        (lambda _: httpx.Response(200, content=b'{"data": ['), errors.ProtocolError),
        (lambda _: httpx.Response(200, json={"data": "x"}), errors.ProtocolError),
        (lambda _: httpx.Response(200, json={"object": "list"}), errors.ProtocolError),
        (lambda _: httpx.Response(200, json={"data": [{"id": 7}]}), errors.ProtocolError),
        (
            lambda _: httpx.Response(200, json={"data": [{"id": "a", "max_model_len": "x"}]}),
            errors.ProtocolError,
        ),
        (lambda _: httpx.Response(200, content=b" " * 5000), errors.ProtocolError),
    ],
)
async def test_observe_maps_every_models_failure_to_the_error_tree(
    answer: Callable[[httpx.Request], httpx.Response], expected: type[errors.LlmctlError]
) -> None:
    fake = FakeVllm()
    fake.override["/v1/models"] = answer
    async with backend(fake, max_body_bytes=4096) as adapter:
        with pytest.raises(expected) as caught:
            await adapter.observe()
    assert type(caught.value) is expected
    assert caught.value.backend == "gpu-1"


async def test_the_error_message_comes_from_either_envelope() -> None:
    fake = FakeVllm()
    async with backend(fake) as adapter:
        fake.override["/v1/models"] = lambda _: httpx.Response(500, json=FLAT_500)
        with pytest.raises(errors.ServerError) as flat:
            await adapter.observe()
        fake.override["/v1/unload_lora_adapter"] = lambda _: httpx.Response(404, json=NESTED_404)
        with pytest.raises(errors.ModelNotFound) as nested:
            await adapter.unload_lora("x")
    assert flat.value.detail == "engine died"
    assert nested.value.detail == "The model `x` does not exist."


async def test_a_hung_server_costs_at_most_the_total_timeout() -> None:
    async def hang(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    started = time.monotonic()
    async with backend(hang, timeouts=FAST) as adapter:
        with pytest.raises(errors.BackendTimedOut):
            await adapter.observe()
    assert time.monotonic() - started < FAST.total + 0.2


async def test_load_lora_posts_name_and_path_and_accepts_the_plain_text_success() -> None:
    fake = FakeVllm()
    fake.override["/v1/load_lora_adapter"] = lambda _: httpx.Response(
        200, text="Success: LoRA adapter 'sql' added successfully."
    )
    async with backend(fake, api_key="k-123") as adapter:
        await adapter.load_lora("sql", "/adapters/sql")
    request = fake.requests[-1]
    assert request.url.path == "/prefix/v1/load_lora_adapter"
    assert json.loads(request.content) == {"lora_name": "sql", "lora_path": "/adapters/sql"}
    assert request.headers["authorization"] == "Bearer k-123"


async def test_load_lora_is_idempotent_when_the_adapter_is_already_loaded() -> None:
    fake = FakeVllm()
    message = "The lora adapter 'sql' has already been loaded."
    fake.override["/v1/load_lora_adapter"] = lambda _: httpx.Response(
        400, json={"error": {"message": message, "type": "InvalidUserInput", "code": 400}}
    )
    async with backend(fake) as adapter:
        await adapter.load_lora("sql", "/adapters/sql")
    assert fake.requests[-1].url.path.endswith("load_lora_adapter")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            404,
            {"error": {"message": "Loading lora sql failed: No adapter found for <path>"}},
            errors.ModelNotFound,
        ),
        (
            400,
            {"object": "error", "message": "Both 'lora_name' and 'lora_path' must be provided."},
            errors.RequestRejected,
        ),
        (500, {"error": {"message": "boom", "type": "InternalServerError"}}, errors.ServerError),
    ],
)
async def test_load_lora_maps_failures(
    status: int, body: dict[str, Any], expected: type[Exception]
) -> None:
    fake = FakeVllm()
    fake.override["/v1/load_lora_adapter"] = lambda _: httpx.Response(status, json=body)
    async with backend(fake) as adapter:
        with pytest.raises(expected):
            await adapter.load_lora("sql", "/adapters/sql")


async def test_lora_routes_missing_on_the_server_are_a_rejection_not_a_missing_model() -> None:
    fake = FakeVllm()
    async with backend(fake) as adapter:
        with pytest.raises(errors.RequestRejected) as caught:
            await adapter.unload_lora("sql")
    assert type(caught.value) is errors.RequestRejected
    assert caught.value.status_code == 404


async def test_unload_lora_posts_the_name() -> None:
    fake = FakeVllm()
    fake.override["/v1/unload_lora_adapter"] = lambda _: httpx.Response(
        200, text="Success: removed"
    )
    async with backend(fake) as adapter:
        await adapter.unload_lora("sql")
    assert json.loads(fake.requests[-1].content) == {"lora_name": "sql"}


async def test_vllm_declares_lora_and_metrics_but_no_pull_or_delete() -> None:
    assert vllm.VllmBackend.capabilities == base.Capabilities(can_load_lora=True, has_metrics=True)
    async with backend(FakeVllm()) as adapter:
        assert isinstance(adapter, base.Observer)
        assert isinstance(adapter, base.LoraManager)
        assert not isinstance(adapter, base.Puller)

"""The vLLM adapter against the vLLM emulator over loopback HTTP, with `/nodes/<i>` prefixes.

Every operation is run against every fault kind and must raise the mapped error within
`Timeouts.total`; auxiliary probes (health, version, metrics) only degrade an observation.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from emulators import faults
from emulators import vllm as emulator
from runtimestate import errors
from runtimestate.backends import base, vllm

TIMEOUTS = base.Timeouts(connect=1.0, read=0.3, stall=0.3, total=0.8)  # connect: busy CI
SLACK = 0.3
CAP = 64 * 1024
Kind = faults.FaultKind


@pytest.fixture
async def emu() -> AsyncIterator[emulator.Emulator]:
    async with emulator.running(
        served_model_names=["my-model"], max_model_len=4096, enable_lora=True, nodes=2
    ) as emu:
        yield emu


@pytest.fixture
async def node(emu: emulator.Emulator) -> AsyncIterator[vllm.VllmBackend]:
    async with vllm.VllmBackend(
        emu.node_url(1), name="gpu-1", timeouts=TIMEOUTS, max_body_bytes=CAP
    ) as adapter:
        yield adapter


Operation = Callable[[vllm.VllmBackend], Awaitable[Any]]
OPERATIONS: dict[str, tuple[str, Operation]] = {
    "observe": ("/v1/models", lambda b: b.observe()),
    "version": ("/version", lambda b: b.version()),
    "metrics": ("/metrics", lambda b: b.metrics()),
    "load_lora": ("/v1/load_lora_adapter", lambda b: b.load_lora("sql", "/adapters/sql")),
    "unload_lora": ("/v1/unload_lora_adapter", lambda b: b.unload_lora("sql")),
}
FAULTS: dict[str, tuple[faults.Fault, type[errors.LlmctlError]]] = {
    "latency": (faults.Fault(Kind.LATENCY, latency=2.0), errors.BackendTimedOut),
    "hang": (faults.Fault(Kind.HANG), errors.BackendTimedOut),
    "http_500": (faults.Fault(Kind.HTTP_500), errors.ServerError),
    "reset": (faults.Fault(Kind.RESET), errors.BackendUnavailable),
    "malformed": (faults.Fault(Kind.MALFORMED), errors.ProtocolError),
    "oversized": (faults.Fault(Kind.OVERSIZED), errors.ProtocolError),
}
# LoRA routes answer success in plain text that nobody parses: a "malformed" one is unnoticeable.
SKIPPED = {("load_lora", "malformed"), ("unload_lora", "malformed")}
MATRIX = [(op, kind) for op in OPERATIONS for kind in FAULTS if (op, kind) not in SKIPPED]


@pytest.mark.parametrize(("operation", "kind"), MATRIX)
async def test_every_operation_maps_every_fault_within_its_timeout(
    emu: emulator.Emulator, node: vllm.VllmBackend, operation: str, kind: str
) -> None:
    endpoint, call = OPERATIONS[operation]
    fault, expected = FAULTS[kind]
    emu.set_fault(fault, endpoint=endpoint, node=1)
    started = time.monotonic()
    with pytest.raises(errors.LlmctlError) as caught:
        await call(node)
    assert type(caught.value) is expected, repr(caught.value)
    assert caught.value.backend == "gpu-1"
    assert time.monotonic() - started < TIMEOUTS.total + SLACK
    assert any(key.endswith(f" {endpoint}") for key in emu.nodes[1].requests)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (Kind.LATENCY, errors.BackendTimedOut),
        (Kind.HANG, errors.BackendTimedOut),
        (Kind.RESET, errors.BackendUnavailable),
        (Kind.OVERSIZED, errors.ProtocolError),
    ],
)
async def test_health_raises_the_mapped_error_when_it_gets_no_usable_answer(
    emu: emulator.Emulator,
    node: vllm.VllmBackend,
    kind: faults.FaultKind,
    expected: type[Exception],
) -> None:
    emu.set_fault(faults.Fault(kind, latency=2.0), endpoint="/health", node=1)
    started = time.monotonic()
    with pytest.raises(expected):
        await node.health()
    assert time.monotonic() - started < TIMEOUTS.total + SLACK


async def test_health_is_false_when_the_engine_answers_an_error(
    emu: emulator.Emulator, node: vllm.VllmBackend
) -> None:
    assert await node.health() is True
    emu.set_fault(faults.Fault(Kind.HTTP_500), endpoint="/health", node=1)
    assert await node.health() is False


@pytest.mark.parametrize("endpoint", ["/health", "/version", "/metrics"])
@pytest.mark.parametrize("kind", [kind for kind in Kind if kind not in faults.STREAM_ONLY])
async def test_a_failing_probe_only_degrades_the_observation(
    emu: emulator.Emulator, node: vllm.VllmBackend, endpoint: str, kind: faults.FaultKind
) -> None:
    emu.set_fault(faults.Fault(kind, latency=2.0), endpoint=endpoint, node=1)
    started = time.monotonic()
    observation = await node.observe()
    assert [m.name for m in observation.models] == ["my-model"]
    assert time.monotonic() - started < TIMEOUTS.total + SLACK
    probes = {
        "/health": observation.healthy,
        "/version": observation.version,
        "/metrics": observation.metrics,
    }
    if kind is not Kind.MALFORMED or endpoint != "/health":  # /health's empty body is unread
        assert probes[endpoint] in (None, False)
    assert all(v not in (None, False) for k, v in probes.items() if k != endpoint)


async def test_observe_reports_served_models_gauges_and_version(
    emu: emulator.Emulator, node: vllm.VllmBackend
) -> None:
    state = emu.nodes[1]
    state.running, state.waiting, state.kv_cache_usage = 3.0, 5.0, 0.625
    observation = await node.observe()
    (model,) = observation.models
    assert (model.name, model.model, model.context_length) == (
        "my-model",
        "Qwen/Qwen2.5-0.5B-Instruct",
        4096,
    )
    assert model.loaded
    assert model.can_chat
    assert observation.metrics == base.EngineMetrics(3.0, 5.0, 0.625)
    assert (observation.healthy, observation.version) == (True, "0.33.0")


async def test_an_unhealthy_engine_is_observed_as_not_healthy(
    emu: emulator.Emulator, node: vllm.VllmBackend
) -> None:
    emu.nodes[1].healthy = False
    observation = await node.observe()
    assert observation.healthy is False


async def test_an_old_server_is_read_through_its_flat_envelope_and_old_metric_name() -> None:
    async with (
        emulator.running(served_model_names=["m"], version="0.9.2", enable_lora=True) as emu,
        vllm.VllmBackend(emu.url, name="old", timeouts=TIMEOUTS) as adapter,
    ):
        emu.nodes[0].kv_cache_usage = 0.5
        observation = await adapter.observe()
        with pytest.raises(errors.ModelNotFound) as caught:
            await adapter.unload_lora("nope")
    assert observation.metrics is not None
    assert observation.metrics.kv_cache_usage == 0.5
    assert caught.value.detail == "The lora adapter 'nope' cannot be found."


async def test_lora_load_is_idempotent_listed_with_its_parent_and_unloads(
    emu: emulator.Emulator, node: vllm.VllmBackend
) -> None:
    await node.load_lora("sql", "/adapters/sql")
    await node.load_lora("sql", "/adapters/sql")
    lora = {m.name: m for m in (await node.observe()).models}["sql"]
    assert (lora.details.parent_model, lora.context_length, lora.model) == (
        "my-model",
        4096,
        "/adapters/sql",
    )
    await node.unload_lora("sql")
    assert "sql" not in emu.nodes[1].loras
    with pytest.raises(errors.ModelNotFound):
        await node.unload_lora("sql")


async def test_lora_from_a_path_without_an_adapter_is_model_not_found(
    emu: emulator.Emulator, node: vllm.VllmBackend
) -> None:
    emu.nodes[1].missing_lora_paths.add("/adapters/missing")
    with pytest.raises(errors.ModelNotFound) as caught:
        await node.load_lora("x", "/adapters/missing")
    assert "No adapter found" in caught.value.detail


async def test_lora_routes_absent_without_runtime_updating_are_rejected() -> None:
    async with (
        emulator.running(served_model_names=["m"]) as emu,
        vllm.VllmBackend(emu.url, name="static", timeouts=TIMEOUTS) as adapter,
    ):
        with pytest.raises(errors.RequestRejected) as caught:
            await adapter.load_lora("sql", "/adapters/sql")
    assert "LORA" in caught.value.detail


async def test_the_api_key_is_required_and_a_wrong_one_is_unauthorized() -> None:
    async with emulator.running(served_model_names=["m"], api_key="right-key") as emu:
        async with vllm.VllmBackend(emu.url, name="k", api_key="wrong", timeouts=TIMEOUTS) as bad:
            with pytest.raises(errors.Unauthorized) as caught:
                await bad.observe()
        async with vllm.VllmBackend(emu.url, api_key="right-key", timeouts=TIMEOUTS) as good:
            observation = await good.observe()
    assert "wrong" not in str(caught.value)
    assert [m.name for m in observation.models] == ["m"]


async def test_a_stopped_server_is_unavailable() -> None:
    async with emulator.running() as emu:
        url = emu.url
    async with vllm.VllmBackend(url, name="gone", timeouts=TIMEOUTS) as adapter:
        with pytest.raises(errors.BackendUnavailable):
            await adapter.observe()

"""The Ollama adapter against the Ollama emulator over loopback HTTP, through the official
client, with node URLs that carry a `/nodes/<i>` path prefix.

Every operation is run against every fault kind; each must raise the mapped error within its
configured timeout (`total` for requests, `stall` for pulls).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from emulators import faults
from emulators import ollama as emulator
from runtimestate import errors
from runtimestate.backends import base, ollama

TIMEOUTS = base.Timeouts(connect=1.0, read=0.3, stall=0.3, total=0.8)  # connect: busy CI
SLACK = 0.3  # scheduling jitter on a busy machine
CAP = 64 * 1024  # the emulator pads oversized bodies to 4 MB
Kind = faults.FaultKind


@pytest.fixture
async def emu() -> AsyncIterator[emulator.Emulator]:
    """Two nodes, so every URL has a path prefix; node 1 is the one under test."""
    async with emulator.running(installed=["qwen2:0.5b", "nomic-embed-text"], nodes=2) as emu:
        yield emu


@pytest.fixture
async def node(emu: emulator.Emulator) -> AsyncIterator[ollama.OllamaBackend]:
    async with ollama.OllamaBackend(
        emu.node_url(1), name="node-1", timeouts=TIMEOUTS, max_body_bytes=CAP
    ) as adapter:
        yield adapter


async def drain(progress: AsyncIterator[base.PullProgress]) -> list[base.PullProgress]:
    return [item async for item in progress]


Operation = Callable[[ollama.OllamaBackend], Awaitable[Any]]
OPERATIONS: dict[str, tuple[str, Operation, float]] = {
    "observe/tags": ("/api/tags", lambda b: b.observe(), TIMEOUTS.total),
    "observe/ps": ("/api/ps", lambda b: b.observe(), TIMEOUTS.total),
    "observe/show": ("/api/show", lambda b: b.observe(), TIMEOUTS.total),
    "version": ("/api/version", lambda b: b.version(), TIMEOUTS.total),
    "delete": ("/api/delete", lambda b: b.delete("qwen2:0.5b"), TIMEOUTS.total),
    "pull": ("/api/pull", lambda b: drain(b.pull("tinyllama")), TIMEOUTS.stall),
    "preload": ("/api/generate", lambda b: b.preload("qwen2:0.5b", "-1"), TIMEOUTS.total),
    "unload": ("/api/generate", lambda b: b.unload("qwen2:0.5b"), TIMEOUTS.total),
}
FAULTS: dict[str, tuple[faults.Fault, type[errors.LlmctlError]]] = {
    "latency": (faults.Fault(Kind.LATENCY, latency=2.0), errors.BackendTimedOut),
    "hang": (faults.Fault(Kind.HANG), errors.BackendTimedOut),
    "http_500": (faults.Fault(Kind.HTTP_500), errors.ServerError),
    "reset": (faults.Fault(Kind.RESET), errors.BackendUnavailable),
    "malformed": (faults.Fault(Kind.MALFORMED), errors.ProtocolError),
    "oversized": (faults.Fault(Kind.OVERSIZED), errors.ProtocolError),
}
# Ollama answers a delete with an empty body that the client never parses, so a malformed
# body cannot be noticed (and the model is deleted all the same).
SKIPPED = {("delete", "malformed")}
MATRIX = [(op, kind) for op in OPERATIONS for kind in FAULTS if (op, kind) not in SKIPPED]


@pytest.mark.parametrize(("operation", "kind"), MATRIX)
async def test_every_operation_maps_every_fault_within_its_timeout(
    emu: emulator.Emulator, node: ollama.OllamaBackend, operation: str, kind: str
) -> None:
    endpoint, call, limit = OPERATIONS[operation]
    fault, expected = FAULTS[kind]
    emu.set_fault(fault, endpoint=endpoint, node=1)
    started = time.monotonic()
    with pytest.raises(errors.LlmctlError) as caught:
        await call(node)
    elapsed = time.monotonic() - started
    assert type(caught.value) is expected, repr(caught.value)
    assert caught.value.backend == "node-1"
    assert elapsed < limit + SLACK
    assert any(key.endswith(f" {endpoint}") for key in emu.nodes[1].requests)


@pytest.mark.parametrize("kind", [Kind.RESET, Kind.MALFORMED, Kind.OVERSIZED])
async def test_a_pull_broken_mid_stream_fails_after_the_first_lines(
    emu: emulator.Emulator, node: ollama.OllamaBackend, kind: faults.FaultKind
) -> None:
    emu.set_fault(faults.Fault(kind, after_lines=2), endpoint="/api/pull", node=1)
    seen: list[base.PullProgress] = []

    async def pull() -> None:
        async for progress in node.pull("tinyllama"):
            seen.append(progress)

    with pytest.raises(errors.TemporaryError) as caught:
        await pull()
    expected = errors.BackendUnavailable if kind is Kind.RESET else errors.ProtocolError
    assert type(caught.value) is expected
    assert [p.status for p in seen[:1]] == ["pulling manifest"]
    assert len(seen) == 2


async def test_a_hung_node_costs_one_timeout_and_never_delays_the_others(
    emu: emulator.Emulator,
) -> None:
    emu.set_fault(faults.Fault(Kind.HANG), node=1)
    adapters = [
        ollama.OllamaBackend(emu.node_url(i), name=f"n{i}", timeouts=TIMEOUTS) for i in (0, 1)
    ]

    async def timed(adapter: ollama.OllamaBackend) -> tuple[object, float]:
        started = time.monotonic()
        try:
            return await adapter.observe(), time.monotonic() - started
        except errors.LlmctlError as exc:
            return exc, time.monotonic() - started

    try:
        (healthy, fast), (hung, slow) = await asyncio.gather(*(timed(a) for a in adapters))
    finally:
        await asyncio.gather(*(a.aclose() for a in adapters))
    assert isinstance(healthy, base.Observation)
    assert fast < 0.2
    assert isinstance(hung, errors.BackendTimedOut)
    assert slow < TIMEOUTS.total + SLACK


async def test_observe_reports_installed_models_capabilities_context_and_loaded_state(
    emu: emulator.Emulator, node: ollama.OllamaBackend
) -> None:
    async with httpx.AsyncClient(base_url=emu.node_url(1) + "/") as client:
        loaded = await client.post("api/generate", json={"model": "qwen2:0.5b", "prompt": ""})
    assert loaded.status_code == 200
    observation = await node.observe()
    by_name = {m.name: m for m in observation.models}
    assert set(by_name) == {"qwen2:0.5b", "nomic-embed-text:latest"}
    qwen, nomic = by_name["qwen2:0.5b"], by_name["nomic-embed-text:latest"]
    assert (qwen.loaded, nomic.loaded) == (True, False)
    assert qwen.capabilities == {"chat", "prompt", "stream"}
    assert nomic.capabilities == {"embed"}
    assert qwen.context_length == 32768
    assert nomic.context_length is not None
    assert qwen.digest is not None
    assert len(qwen.digest) == 64
    assert qwen.details.family == "qwen2"
    assert observation.version == "0.30.0"


async def test_preload_keeps_a_model_loaded_with_its_vram_and_expiry_until_unload(
    emu: emulator.Emulator, node: ollama.OllamaBackend
) -> None:
    await node.preload("qwen2:0.5b", "-1")
    await node.preload("nomic-embed-text", "10m")
    by_name = {m.name: m for m in (await node.observe()).models}
    qwen, nomic = by_name["qwen2:0.5b"], by_name["nomic-embed-text:latest"]
    assert (qwen.loaded, nomic.loaded) == (True, True)
    assert qwen.size_vram == qwen.size
    assert qwen.expires_at is not None
    assert nomic.expires_at is not None
    assert qwen.expires_at.year > 2200  # "-1" went as a number: forever
    assert (nomic.expires_at - dt.datetime.now(dt.UTC)).total_seconds() < 601
    assert emu.nodes[1].state()["preloads"] == {"qwen2:0.5b": 1, "nomic-embed-text:latest": 1}
    await node.unload("qwen2:0.5b")
    by_name = {m.name: m for m in (await node.observe()).models}
    assert by_name["qwen2:0.5b"].loaded is False
    assert by_name["qwen2:0.5b"].size_vram is None
    assert emu.nodes[1].state()["unloads"] == {"qwen2:0.5b": 1}


async def test_preload_of_a_model_not_installed_is_model_not_found(
    node: ollama.OllamaBackend,
) -> None:
    with pytest.raises(errors.ModelNotFound):
        await node.preload("tinyllama", "-1")


async def test_observe_asks_show_only_for_digests_it_has_not_seen(
    emu: emulator.Emulator, node: ollama.OllamaBackend
) -> None:
    await node.observe()
    await node.observe()
    requests = emu.nodes[1].requests
    assert requests["GET /api/tags"] == 2
    assert requests["POST /api/show"] == 2
    assert emu.nodes[0].requests["GET /api/tags"] == 0


async def test_pull_then_delete_round_trips_through_the_node(
    emu: emulator.Emulator, node: ollama.OllamaBackend
) -> None:
    progress = await drain(node.pull("tinyllama"))
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    assert any(p.total and p.completed == p.total for p in progress)
    assert "tinyllama:latest" in {m.name for m in (await node.observe()).models}
    await node.delete("tinyllama")
    assert "tinyllama:latest" not in {m.name for m in (await node.observe()).models}
    with pytest.raises(errors.ModelNotFound):
        await node.delete("tinyllama")


async def test_pull_of_an_unknown_model_is_a_terminal_model_not_found(
    node: ollama.OllamaBackend,
) -> None:
    with pytest.raises(errors.ModelNotFound) as caught:
        await drain(node.pull("no-such-model:7b"))
    assert not caught.value.retryable
    assert "file does not exist" in caught.value.detail


async def test_pull_of_an_invalid_name_is_an_invalid_model_name(
    node: ollama.OllamaBackend,
) -> None:
    with pytest.raises(errors.InvalidModelName):
        await drain(node.pull("bad name!"))


async def test_pull_onto_a_full_disk_is_insufficient_disk(emu: emulator.Emulator) -> None:
    emu.nodes[1].patch({"disk_capacity": 1})
    async with ollama.OllamaBackend(emu.node_url(1), name="n1", timeouts=TIMEOUTS) as adapter:
        with pytest.raises(errors.InsufficientDisk) as caught:
            await drain(adapter.pull("tinyllama"))
    assert caught.value.reason == "insufficient_disk"


async def test_a_pull_that_stops_progressing_fails_within_the_stall_timeout() -> None:
    slow = emulator.running(nodes=2, pull_rate=1000, tick_interval=5.0)
    patient = base.Timeouts(connect=0.3, read=5.0, stall=0.3, total=5.0)  # only stall can fire
    async with slow as emu, ollama.OllamaBackend(emu.node_url(1), timeouts=patient) as adapter:
        started = time.monotonic()
        with pytest.raises(errors.BackendTimedOut):
            await drain(adapter.pull("tinyllama"))
    assert time.monotonic() - started < TIMEOUTS.stall + SLACK


async def test_a_stopped_node_is_unavailable(emu: emulator.Emulator) -> None:
    url = emu.node_url(1)
    async with emulator.running(nodes=1) as other:
        dead_url = other.url
    async with ollama.OllamaBackend(dead_url, name="gone", timeouts=TIMEOUTS) as adapter:
        with pytest.raises(errors.BackendUnavailable):
            await adapter.observe()
        with pytest.raises(errors.BackendUnavailable):
            await drain(adapter.pull("tinyllama"))
    assert url.endswith("/nodes/1")


async def test_health_answers_true_false_or_raises(
    emu: emulator.Emulator, node: ollama.OllamaBackend
) -> None:
    assert await node.health() is True
    emu.set_fault(faults.Fault(Kind.HTTP_500), endpoint="/", node=1)
    assert await node.health() is False
    emu.set_fault(faults.Fault(Kind.HANG), endpoint="/", node=1)
    with pytest.raises(errors.BackendTimedOut):
        await node.health()

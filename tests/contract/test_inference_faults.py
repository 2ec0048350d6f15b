"""Inference latency and faults, armed per node through the emulators' control routes, as the
official `openai` client meets them on Ollama's `/v1` and vLLM (what the gateway's failover
tests and benchmark drive)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types import chat

from emulators import ollama, runner, vllm

HI: list[chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def _drain(stream: AsyncIterable[Any], into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


CHAT = "/v1/chat/completions"


class Fleet:
    """Two emulated nodes of one flavour and the model they serve."""

    def __init__(self, emu: runner.Emulator[Any], model: str) -> None:
        self.emu, self.model = emu, model

    def client(self, node: int) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.emu.node_url(node) + "/v1", api_key="unused", max_retries=0
        )

    async def control(self, node: int, action: str, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient() as raw:
            return await raw.post(f"{self.emu.node_url(node)}/_emulator/{action}", json=body)


@pytest.fixture(params=["ollama", "vllm"])
async def fleet(request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    if request.param == "ollama":
        async with ollama.running(installed=["qwen2:0.5b"], nodes=2) as emu:
            yield Fleet(emu, "qwen2:0.5b")
    else:
        async with vllm.running(served_model_names=["my-model"], nodes=2) as emu:
            yield Fleet(emu, "my-model")


async def test_a_429_armed_on_one_node_carries_retry_after_and_spares_the_other(
    fleet: Fleet,
) -> None:
    armed = await fleet.control(
        1, "faults", {"kind": "http_429", "endpoint": CHAT, "retry_after": 2, "times": 1}
    )
    async with fleet.client(0) as healthy, fleet.client(1) as limited:
        await healthy.chat.completions.create(model=fleet.model, messages=HI)
        with pytest.raises(openai.RateLimitError) as caught:
            await limited.chat.completions.create(model=fleet.model, messages=HI)
        again = await limited.chat.completions.create(model=fleet.model, messages=HI)

    assert armed.status_code == 200
    assert caught.value.response.headers["retry-after"] == "2"
    assert isinstance(caught.value.body, dict)  # an error envelope, not plain text
    assert again.choices[0].message.content


@pytest.mark.parametrize(("kind", "status"), [("http_500", 500), ("http_503", 503)])
async def test_a_server_error_before_the_first_byte_raises_internal_server_error(
    fleet: Fleet, kind: str, status: int
) -> None:
    await fleet.control(0, "faults", {"kind": kind, "endpoint": CHAT})
    async with fleet.client(0) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model=fleet.model, messages=HI, stream=True)

    assert caught.value.status_code == status


async def test_a_reset_before_the_first_byte_of_a_stream_raises_a_connection_error(
    fleet: Fleet,
) -> None:
    await fleet.control(0, "faults", {"kind": "reset", "endpoint": CHAT, "times": 1})
    async with fleet.client(0) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model=fleet.model, messages=HI, stream=True)

    assert fleet.emu.nodes[0].requests[f"POST {CHAT}"] == 1


async def test_a_stream_error_mid_stream_raises_api_error_after_the_first_chunks(
    fleet: Fleet,
) -> None:
    await fleet.control(0, "faults", {"kind": "stream_error", "endpoint": CHAT, "after_lines": 2})
    received: list[Any] = []
    async with fleet.client(0) as client:
        stream = await client.chat.completions.create(model=fleet.model, messages=HI, stream=True)
        with pytest.raises(openai.APIError) as caught:
            await _drain(stream, received)

    assert len(received) == 2
    assert "injected error in the middle of the stream" in caught.value.message


async def test_a_truncated_stream_ends_quietly_without_its_finish(fleet: Fleet) -> None:
    await fleet.control(0, "faults", {"kind": "truncate", "endpoint": CHAT, "after_lines": 3})
    async with fleet.client(0) as client:
        stream = await client.chat.completions.create(model=fleet.model, messages=HI, stream=True)
        chunks = [chunk async for chunk in stream]

    assert len(chunks) == 3
    assert all(c.choices[0].finish_reason is None for c in chunks)


async def test_ttft_and_token_delay_set_at_run_time_pace_replies_until_reset(
    fleet: Fleet,
) -> None:
    patched = await fleet.control(0, "state", {"ttft": 0.1, "token_delay": 0.01})
    async with fleet.client(0) as client:
        started = time.monotonic()
        stream = await client.chat.completions.create(model=fleet.model, messages=HI, stream=True)
        first = None
        async for _ in stream:
            first = first or time.monotonic() - started
        streamed = time.monotonic() - started
        started = time.monotonic()
        await client.chat.completions.create(model=fleet.model, messages=HI)
        whole = time.monotonic() - started
        await fleet.control(0, "reset", {})
        started = time.monotonic()
        await client.chat.completions.create(model=fleet.model, messages=HI)
        unpaced = time.monotonic() - started

    assert patched.json()["nodes"][0]["ttft"] == 0.1
    assert first is not None
    assert first >= 0.1
    assert streamed >= 0.1 + 0.01 * 8
    assert whole >= 0.1 + 0.01 * 8
    assert unpaced < 0.1
    assert fleet.emu.nodes[1].state()["ttft"] == 0.0  # per node


async def test_a_negative_ttft_is_refused_naming_the_field(fleet: Fleet) -> None:
    refused = await fleet.control(0, "state", {"ttft": -1})

    assert refused.status_code == 400
    assert refused.json() == {"error": "ttft must be a number of seconds >= 0, not -1"}


async def test_ollamas_native_generate_is_paced_like_its_v1_routes() -> None:
    async with (
        ollama.running(installed=["qwen2:0.5b"], ttft=0.1) as emu,
        httpx.AsyncClient() as raw,
    ):
        started = time.monotonic()
        answer = await raw.post(
            emu.url + "/api/generate", json={"model": "qwen2:0.5b", "prompt": "hi", "stream": False}
        )
        elapsed = time.monotonic() - started

    assert answer.json()["done"] is True
    assert elapsed >= 0.1

"""The vLLM emulator's completions, usage chunks, base64 embeddings and mid-stream errors, as the
official `openai` client and a raw SSE reader see them (PROTOCOLS part 2 B.6, D)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from typing import Any

import httpx
import openai
import pytest
from openai.types import chat

from emulators import faults, vllm_openai
from emulators import vllm as emulator

HI: list[chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def _drain(stream: AsyncIterable[Any], into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def test_completions_answer_plain_and_streamed_with_a_usage_chunk(
    vllm_emu: emulator.Emulator,
) -> None:
    async with openai.AsyncOpenAI(base_url=vllm_emu.url + "/v1", api_key="unused") as client:
        plain = await client.completions.create(model="my-model", prompt="one two three")
        stream = await client.completions.create(
            model="my-model", prompt="one", stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]

    assert (plain.model, plain.object) == ("my-model", "text_completion")
    assert plain.choices[0].text == vllm_openai.REPLY
    assert plain.usage is not None
    assert plain.usage.prompt_tokens == 3
    assert plain.usage.completion_tokens == len(vllm_openai.WORDS)
    assert "".join(c.choices[0].text for c in chunks if c.choices).strip() == vllm_openai.REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 1


async def test_a_completion_without_a_prompt_is_a_400_error(
    vllm_emu: emulator.Emulator,
) -> None:
    async with openai.AsyncOpenAI(base_url=vllm_emu.url + "/v1", api_key="unused") as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.completions.create(model="my-model", prompt=None)

    assert "Either prompt or prompt_embeds must be provided" in caught.value.message
    assert caught.value.code == "400"


async def test_a_streamed_chat_ends_with_a_usage_chunk_without_nulls_then_done(
    vllm_emu: emulator.Emulator,
) -> None:
    body = {"model": "my-model", "messages": HI, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    async with httpx.AsyncClient() as raw:
        text = (await raw.post(vllm_emu.url + "/v1/chat/completions", json=body)).text

    frames = text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    usage_chunk = json.loads(frames[-3].removeprefix("data: "))
    assert usage_chunk["choices"] == []
    assert None not in usage_chunk["usage"].values()
    assert usage_chunk["usage"]["total_tokens"] == 1 + len(vllm_openai.WORDS)


async def test_a_mid_stream_error_raises_api_error_after_the_first_chunks(
    vllm_emu: emulator.Emulator,
) -> None:
    vllm_emu.set_fault(faults.Fault(faults.FaultKind.STREAM_ERROR, after_lines=3))
    received: list[Any] = []
    async with openai.AsyncOpenAI(base_url=vllm_emu.url + "/v1", api_key="unused") as client:
        stream = await client.chat.completions.create(model="my-model", messages=HI, stream=True)
        with pytest.raises(openai.APIError) as caught:
            await _drain(stream, received)

    assert len(received) == 3
    assert not isinstance(caught.value, openai.APIStatusError)  # inside a 200 stream
    assert caught.value.type == "InternalServerError"
    assert caught.value.code == "500"


async def test_embeddings_honour_base64_as_the_openai_client_asks_by_default() -> None:
    async with (
        emulator.running(served_model_names=["embedder"], runner="pooling") as emu,
        openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="unused") as client,
        httpx.AsyncClient() as raw,
    ):
        floats = await client.embeddings.create(
            model="embedder", input="a", encoding_format="float"
        )
        decoded = await client.embeddings.create(model="embedder", input="a")
        body = {"model": "embedder", "input": "a", "encoding_format": "base64"}
        encoded = (await raw.post(emu.url + "/v1/embeddings", json=body)).json()

    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert isinstance(encoded["data"][0]["embedding"], str)

"""The official `openai` client against the Ollama emulator's OpenAI-compatible `/v1` routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from openai.types import chat

from emulators import ollama as emulator
from emulators import ollama_inference

HI: list[chat.ChatCompletionMessageParam] = [{"role": "user", "content": "say hi"}]


@pytest.fixture
async def client(ollama_emu: emulator.Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=ollama_emu.url + "/v1", api_key="ignored", max_retries=0
    ) as client:
        yield client


async def test_chat_completion_answers_with_the_requested_model_and_ollamas_token_counts(
    client: openai.AsyncOpenAI, ollama_emu: emulator.Emulator
) -> None:
    reply = await client.chat.completions.create(model="qwen2:0.5b", messages=HI)

    assert reply.model == "qwen2:0.5b"
    assert reply.object == "chat.completion"
    assert reply.system_fingerprint == "fp_ollama"
    assert reply.choices[0].message.content == ollama_inference.REPLY
    assert reply.choices[0].finish_reason == "stop"
    final = ollama_inference.final()
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == final["prompt_eval_count"]
    assert reply.usage.completion_tokens == final["eval_count"]
    assert reply.usage.total_tokens == final["prompt_eval_count"] + final["eval_count"]
    assert [m.spec.name for m in ollama_emu.nodes[0].running()] == ["qwen2:0.5b"]  # loaded


async def test_streamed_chat_sends_deltas_a_finish_chunk_then_usage_when_asked(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="qwen2:0.5b", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == ollama_inference.REPLY
    assert all(c.usage is None for c in chunks[:-1])
    finish = chunks[-2].choices[0]
    assert (finish.finish_reason, finish.delta.content) == ("stop", None)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == ollama_inference.final()["eval_count"]


async def test_streamed_chat_without_include_usage_has_no_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(model="qwen2:0.5b", messages=HI, stream=True)
    chunks = [chunk async for chunk in stream]

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.choices for c in chunks)


async def test_completions_answer_a_string_prompt_plain_and_streamed_with_zero_usage_chunks(
    client: openai.AsyncOpenAI,
) -> None:
    plain = await client.completions.create(model="qwen2:0.5b", prompt="Once upon")
    stream = await client.completions.create(
        model="qwen2:0.5b", prompt="Once upon", stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert plain.choices[0].text == ollama_inference.REPLY
    assert plain.object == "text_completion"
    assert plain.usage is not None
    assert plain.usage.completion_tokens == ollama_inference.final()["eval_count"]
    assert "".join(c.choices[0].text for c in chunks if c.choices).strip() == plain.choices[0].text
    assert all(c.usage is not None and c.usage.total_tokens == 0 for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage


async def test_embeddings_come_as_floats_or_base64_and_the_client_decodes_both_alike(
    client: openai.AsyncOpenAI, ollama_emu: emulator.Emulator
) -> None:
    floats = await client.embeddings.create(
        model="nomic-embed-text", input=["a b", "c"], encoding_format="float"
    )
    decoded = await client.embeddings.create(model="nomic-embed-text", input=["a b", "c"])
    async with httpx.AsyncClient() as raw:
        body = (
            await raw.post(
                ollama_emu.url + "/v1/embeddings",
                json={"model": "nomic-embed-text", "input": "c", "encoding_format": "base64"},
            )
        ).json()

    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 768
    assert floats.usage.prompt_tokens == 3
    for exact, approximate in zip(floats.data, decoded.data, strict=True):
        assert approximate.embedding == pytest.approx(exact.embedding, abs=1e-6)
    assert isinstance(body["data"][0]["embedding"], str)


async def test_models_lists_installed_models_and_retrieves_one(
    client: openai.AsyncOpenAI,
) -> None:
    listed = await client.models.list()
    one = await client.models.retrieve("qwen2:0.5b")

    assert sorted(m.id for m in listed.data) == ["nomic-embed-text:latest", "qwen2:0.5b"]
    assert {m.owned_by for m in listed.data} == {"library"}
    assert (one.id, one.object, one.owned_by) == ("qwen2:0.5b", "model", "library")
    assert one.created > 0


async def test_models_data_is_null_when_nothing_is_installed() -> None:
    async with emulator.running() as emu, httpx.AsyncClient() as raw:
        body = (await raw.get(emu.url + "/v1/models")).json()

    assert body == {"object": "list", "data": None}


async def test_an_unknown_model_raises_not_found_with_ollamas_message(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as chat:
        await client.chat.completions.create(model="nope:1b", messages=HI)
    with pytest.raises(openai.NotFoundError) as card:
        await client.models.retrieve("nope:1b")

    envelope = {"message": "model 'nope:1b' not found", "type": "not_found_error",
                "param": None, "code": None}  # fmt: skip
    assert chat.value.body == envelope
    assert card.value.body == envelope


async def test_bad_requests_raise_bad_request_with_the_invalid_request_type(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as embedder:
        await client.chat.completions.create(model="nomic-embed-text", messages=HI)
    with pytest.raises(openai.BadRequestError) as empty:
        await client.embeddings.create(model="nomic-embed-text", input=[])
    with pytest.raises(openai.BadRequestError) as encoding:
        await client.embeddings.create(
            model="nomic-embed-text",
            input="a",
            extra_body={"encoding_format": "bytes"},
        )

    assert embedder.value.body == {"message": '"nomic-embed-text" does not support chat',
                                   "type": "invalid_request_error", "param": None,
                                   "code": None}  # fmt: skip
    assert empty.value.message.endswith(" - invalid input")
    assert "encoding_format" in encoding.value.message

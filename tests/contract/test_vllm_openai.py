"""The official `openai` client against the vLLM emulator over loopback HTTP."""

from __future__ import annotations

import openai
import pytest

from emulators import vllm as emulator
from emulators import vllm_openai


def test_models_lists_one_card_per_served_name_with_max_model_len(
    vllm_thread: emulator.Emulator,
) -> None:
    client = openai.OpenAI(base_url=vllm_thread.url + "/v1", api_key="unused")

    cards = client.models.list().data

    assert [c.id for c in cards] == ["my-model"]
    assert cards[0].owned_by == "vllm"
    assert cards[0].model_extra is not None
    assert cards[0].model_extra["max_model_len"] == 4096
    assert cards[0].model_extra["parent"] is None


def test_chat_completion_answers_with_the_served_model_name(
    vllm_thread: emulator.Emulator,
) -> None:
    client = openai.OpenAI(base_url=vllm_thread.url + "/v1", api_key="unused")

    reply = client.chat.completions.create(
        model="my-model", messages=[{"role": "user", "content": "say hi"}]
    )

    assert reply.model == "my-model"
    assert reply.choices[0].message.content == vllm_openai.REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 2


async def test_streamed_chat_yields_deltas_then_usage(vllm_emu: emulator.Emulator) -> None:
    async with openai.AsyncOpenAI(base_url=vllm_emu.url + "/v1", api_key="unused") as client:
        stream = await client.chat.completions.create(
            model="my-model",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip() == vllm_openai.REPLY
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens > 0


async def test_unknown_model_raises_not_found_with_valid_aliases(
    vllm_emu: emulator.Emulator,
) -> None:
    async with openai.AsyncOpenAI(base_url=vllm_emu.url + "/v1", api_key="unused") as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(
                model="other", messages=[{"role": "user", "content": "hi"}]
            )

        assert caught.value.status_code == 404
        # Client versions differ in how much of the envelope they quote; the text is in all.
        assert "The model `other` does not exist. Valid aliases: my-model." in caught.value.message


async def test_embeddings_on_a_pooling_model_return_one_vector_per_input() -> None:
    async with (
        emulator.running(served_model_names=["embedder"], runner="pooling") as emu,
        openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="unused") as client,
    ):
        result = await client.embeddings.create(
            model="embedder", input=["a", "b", "c"], encoding_format="float"
        )
        again = await client.embeddings.create(model="embedder", input="a", encoding_format="float")

    assert [d.index for d in result.data] == [0, 1, 2]
    assert len(result.data[0].embedding) == 384
    assert again.data[0].embedding == result.data[0].embedding  # deterministic
    assert result.data[0].embedding != result.data[1].embedding


async def test_the_api_key_is_required_under_v1() -> None:
    async with (
        emulator.running(api_key="secret") as emu,
        openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="secret") as good,
        openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="wrong") as bad,
    ):
        listed = await good.models.list()
        with pytest.raises(openai.AuthenticationError) as caught:
            await bad.models.list()

    assert len(listed.data) == 1
    assert caught.value.status_code == 401
    assert caught.value.body == "Unauthorized"  # the client unwraps `{"error": ...}`
